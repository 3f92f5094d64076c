//! [`builder_setters!`](crate::builder_setters): the by-value setters of builder types, which
//! all have the one shape `#[must_use] pub fn name(mut self, arg) -> Self { ...; self }`.

/// Writes by-value builder setters, used inside an `impl` block. Each item
/// `fn name(arg: Type) { field = value }` becomes
/// `#[must_use] pub fn name(mut self, arg: Type) -> Self { self.field = value; self }`, and
/// `fn name(arg: Type) { field.push(value) }` a setter that adds `value` to the list `field`.
/// `const fn` items become `pub const fn` setters. The attributes written above an item (its
/// rustdoc) go onto the method.
///
/// ```
/// #[derive(Debug, Default)]
/// pub struct Query {
///     /// At most this many.
///     pub limit: Option<usize>,
///     /// Any of these tags.
///     pub tags: Vec<String>,
///     /// Newest first.
///     pub descending: bool,
/// }
///
/// impl Query {
///     asm_core::builder_setters! {
///         /// Sets [`Query::limit`].
///         fn limit(limit: usize) { limit = Some(limit) }
///         /// Adds to [`Query::tags`].
///         fn tag(tag: impl Into<String>) { tags.push(tag.into()) }
///         /// Sets [`Query::descending`].
///         const fn descending(yes: bool) { descending = yes }
///     }
/// }
///
/// let q = Query::default().limit(10).tag("a").tag("b").descending(true);
/// assert_eq!((q.limit, q.tags.len(), q.descending), (Some(10), 2, true));
/// ```
#[macro_export]
macro_rules! builder_setters {
    () => {};
    (@write $this:ident, $field:ident.push($value:expr)) => {
        $this.$field.push($value)
    };
    (@write $this:ident, $field:ident = $value:expr) => {
        $this.$field = $value
    };
    (@method [$($qualifier:tt)*] $(#[$attr:meta])* fn $name:ident($arg:ident: $arg_ty:ty) { $($body:tt)* } $($rest:tt)*) => {
        $(#[$attr])*
        #[must_use]
        pub $($qualifier)* fn $name(mut self, $arg: $arg_ty) -> Self {
            $crate::builder_setters!(@write self, $($body)*);
            self
        }
        $crate::builder_setters!($($rest)*);
    };
    ($(#[$attr:meta])* const fn $($rest:tt)*) => {
        $crate::builder_setters!(@method [const] $(#[$attr])* fn $($rest)*);
    };
    ($(#[$attr:meta])* fn $($rest:tt)*) => {
        $crate::builder_setters!(@method [] $(#[$attr])* fn $($rest)*);
    };
}
