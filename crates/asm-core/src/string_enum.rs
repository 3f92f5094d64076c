//! [`string_enum!`](crate::string_enum): the impls a fieldless enum with one fixed string per
//! variant repeats.

/// Implements the string impls of a fieldless enum from one list of `Variant => "text"` pairs.
///
/// The enum itself (derives, serde attributes, `#[non_exhaustive]`, variant docs) stays written
/// out as usual; the macro only adds:
///
/// - `pub const fn as_str(self) -> &'static str`, documented with the doc comments written
///   before the type name (`Type::method { .. }` names the method something else, such as
///   `key`); every variant must be listed, so a new variant without a string does not compile;
/// - `impl Display`, writing exactly that string;
///
/// and, for each of these optional clauses after the list (each may carry its own doc comments):
///
/// - `pub const ALL;`: `pub const ALL: &'static [Type]`, every variant in list order;
/// - `pub fn name(text) -> Option<Self>;`: the variant whose string is exactly `text`;
/// - `pub fn name(text) -> Result<Self, E> { fallback }`: the variant whose string is exactly
///   `text`, else `fallback` (a block of type `Result<Self, E>` that may use `text`), which
///   builds the caller's own typed error; followed by `impl FromStr;`, `FromStr` delegates to it;
/// - `impl FromStr(text) -> Result<Self, E> { fallback }`: `FromStr` with `Err = E`, the exact
///   strings accepted, anything else `fallback`.
///
/// ```
/// use std::str::FromStr;
///
/// /// How backends are picked.
/// #[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// pub enum Strategy {
///     /// Pick one.
///     Auto,
///     /// Always git.
///     Git,
/// }
///
/// #[derive(Debug, PartialEq, Eq)]
/// pub struct UnknownStrategy(String);
///
/// asm_core::string_enum! {
///     /// The wire name.
///     Strategy {
///         Auto => "auto",
///         Git => "git",
///     }
///     /// Every strategy.
///     pub const ALL;
///     /// Parses a wire name.
///     pub fn parse(text) -> Result<Self, UnknownStrategy> { Err(UnknownStrategy(text.to_owned())) }
///     impl FromStr;
/// }
///
/// assert_eq!(Strategy::Git.as_str(), "git");
/// assert_eq!(Strategy::Auto.to_string(), "auto");
/// assert_eq!(Strategy::ALL, &[Strategy::Auto, Strategy::Git]);
/// assert_eq!(Strategy::from_str("git"), Ok(Strategy::Git));
/// assert_eq!(Strategy::parse("svn"), Err(UnknownStrategy("svn".into())));
///
/// /// A lookup key.
/// #[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// pub enum Key {
///     /// `model`.
///     Model,
/// }
///
/// asm_core::string_enum! {
///     /// The key.
///     Key::key { Model => "model" }
///     /// The key named `key`, if it is one.
///     pub fn from_key(key) -> Option<Self>;
///     /// Parses a key; the error is the unknown text.
///     impl FromStr(text) -> Result<Self, String> { Err(text.to_owned()) }
/// }
///
/// assert_eq!(Key::Model.key(), "model");
/// assert_eq!(Key::Model.to_string(), "model");
/// assert_eq!(Key::from_key("model"), Some(Key::Model));
/// assert_eq!(Key::from_key("Model"), None);
/// assert_eq!("Model".parse::<Key>(), Err("Model".to_owned()));
/// ```
#[macro_export]
macro_rules! string_enum {
    ($(#[$doc:meta])* $ty:ident :: $method:ident { $($variant:ident => $text:literal),+ $(,)? } $($rest:tt)*) => {
        $crate::__string_enum!(@method [$(#[$doc])*] $ty $method [$($variant => $text),+]);
        $crate::__string_enum!(@opts $ty $method [$($variant => $text),+] [] $($rest)*);
    };
    ($(#[$doc:meta])* $ty:ident { $($body:tt)* } $($rest:tt)*) => {
        $crate::string_enum!($(#[$doc])* $ty::as_str { $($body)* } $($rest)*);
    };
}

/// The clauses of [`string_enum!`](crate::string_enum); not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __string_enum {
    (@method [] $ty:ident $method:ident $vars:tt) => {
        $crate::__string_enum!(@method [#[doc = "The string form of the variant."]] $ty $method $vars);
    };
    (@method [$($doc:tt)+] $ty:ident $method:ident [$($variant:ident => $text:literal),+]) => {
        impl $ty {
            $($doc)+
            pub const fn $method(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl ::core::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.$method())
            }
        }
    };

    (@opts $ty:ident $method:ident $vars:tt []) => {};
    (@opts $ty:ident $method:ident $vars:tt [$($doc:tt)+]) => {
        ::core::compile_error!("string_enum!: doc comments must precede a clause");
    };
    (@opts $ty:ident $method:ident $vars:tt [$($doc:tt)*] #[$attr:meta] $($rest:tt)*) => {
        $crate::__string_enum!(@opts $ty $method $vars [$($doc)* #[$attr]] $($rest)*);
    };
    (@opts $ty:ident $method:ident [$($variant:ident => $text:literal),+] [$($doc:tt)*]
        pub const ALL; $($rest:tt)*
    ) => {
        impl $ty {
            $($doc)*
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
        }
        $crate::__string_enum!(@opts $ty $method [$($variant => $text),+] [] $($rest)*);
    };
    (@opts $ty:ident $method:ident [$($variant:ident => $text:literal),+] [$($doc:tt)*]
        pub fn $name:ident($arg:ident) -> Option<Self>; $($rest:tt)*
    ) => {
        impl $ty {
            $($doc)*
            pub fn $name($arg: &str) -> ::core::option::Option<Self> {
                match $arg {
                    $($text => ::core::option::Option::Some(Self::$variant),)+
                    _ => ::core::option::Option::None,
                }
            }
        }
        $crate::__string_enum!(@opts $ty $method [$($variant => $text),+] [] $($rest)*);
    };
    (@opts $ty:ident $method:ident $vars:tt [$($doc:tt)*]
        pub fn $name:ident($arg:ident) -> Result<Self, $err:ty> { $($fallback:tt)* } impl FromStr; $($rest:tt)*
    ) => {
        $crate::__string_enum!(@opts $ty $method $vars [$($doc)*]
            pub fn $name($arg) -> Result<Self, $err> { $($fallback)* } $($rest)*);

        impl ::core::str::FromStr for $ty {
            type Err = $err;

            fn from_str(text: &str) -> ::core::result::Result<Self, $err> {
                Self::$name(text)
            }
        }
    };
    (@opts $ty:ident $method:ident [$($variant:ident => $text:literal),+] [$($doc:tt)*]
        pub fn $name:ident($arg:ident) -> Result<Self, $err:ty> { $($fallback:tt)* } $($rest:tt)*
    ) => {
        impl $ty {
            $($doc)*
            pub fn $name($arg: &str) -> ::core::result::Result<Self, $err> {
                match $arg {
                    $($text => ::core::result::Result::Ok(Self::$variant),)+
                    _ => { $($fallback)* }
                }
            }
        }
        $crate::__string_enum!(@opts $ty $method [$($variant => $text),+] [] $($rest)*);
    };
    (@opts $ty:ident $method:ident [$($variant:ident => $text:literal),+] [$($doc:tt)*]
        impl FromStr($arg:ident) -> Result<Self, $err:ty> { $($fallback:tt)* } $($rest:tt)*
    ) => {
        impl ::core::str::FromStr for $ty {
            type Err = $err;

            $($doc)*
            fn from_str($arg: &str) -> ::core::result::Result<Self, $err> {
                match $arg {
                    $($text => ::core::result::Result::Ok(Self::$variant),)+
                    _ => { $($fallback)* }
                }
            }
        }
        $crate::__string_enum!(@opts $ty $method [$($variant => $text),+] [] $($rest)*);
    };
}
