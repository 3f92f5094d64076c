//! [`builder_setters!`]: the by-value setters of the query, search and policy builders, which
//! all have the one shape `#[must_use] pub fn name(mut self, arg) -> Self { ...; self }`.

/// Writes by-value builder setters, used inside an `impl` block. Each item
/// `fn name(arg: Type) { field = value }` becomes
/// `#[must_use] pub fn name(mut self, arg: Type) -> Self { self.field = value; self }`, and
/// `fn name(arg: Type) { field.push(value) }` a setter that adds `value` to the list `field`.
/// `const fn` items become `pub const fn` setters. The attributes written above an item (its
/// rustdoc) go onto the method.
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
            builder_setters!(@write self, $($body)*);
            self
        }
        builder_setters!($($rest)*);
    };
    ($(#[$attr:meta])* const fn $($rest:tt)*) => {
        builder_setters!(@method [const] $(#[$attr])* fn $($rest)*);
    };
    ($(#[$attr:meta])* fn $($rest:tt)*) => {
        builder_setters!(@method [] $(#[$attr])* fn $($rest)*);
    };
}
