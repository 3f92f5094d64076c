use std::fmt::Debug;

use async_trait::async_trait;

use asm_core::Result;

/// Blobs by key: workspace patches, attachments.
#[async_trait]
pub trait ArtifactStore: Send + Sync + Debug + 'static {
    /// Stores `bytes` under `key`, replacing any previous value.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()>;
    /// Reads the value of `key`. Unknown key: [`ErrorCode::NotFound`](asm_core::ErrorCode::NotFound).
    async fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// Removes `key`; removing an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Keys starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
}
