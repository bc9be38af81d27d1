//! The `settings!` macro: from the one list of settings in `config.rs` it
//! writes the struct that flags, environment and `switchboard.toml` all parse
//! into (clap + serde, every field optional) and the merge that applies
//! precedence and defaults to build [`Settings`](super::Settings). The list
//! itself, `Settings` and validation are in `config.rs`; value types in `values.rs`.

/// Each entry of the list reads
///
/// ```text
/// /// Help text (`--help`).
/// key [-> field]: Type [= default], env "SWITCHBOARD_KEY" [, clap_setting = literal]*;
/// ```
///
/// `key` is the file key and, kebab-cased, the flag; `field` is the
/// `Settings` field when it is named otherwise; `Type` is a
/// [`Value`](super::values::Value); without a default the field is an
/// `Option`. A section `name: Type { entries }` after the main one fills the
/// nested struct `Settings.name`; its entries follow the main ones in `--help`.
macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $Layer:ident => $Settings:ident {
            $(
                $(#[doc = $doc:literal])*
                $key:ident $(-> $field:ident)?: $kind:ty $(= $default:literal)?,
                env $env:literal $(, $arg:ident = $argv:literal)*;
            )*
        }
        $(
            $group:ident: $Group:ident {
                $(
                    $(#[doc = $gdoc:literal])*
                    $gkey:ident $(-> $gfield:ident)?: $gkind:ty $(= $gdefault:literal)?,
                    env $genv:literal $(, $garg:ident = $gargv:literal)*;
                )*
            }
        )*
    ) => {
        $(#[$meta])*
        #[derive(clap::Args, serde::Deserialize, Debug, Default, Clone)]
        #[serde(deny_unknown_fields)]
        pub struct $Layer {
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env $(, $arg = $argv)*)]
                pub $key: Option<$kind>,
            )*
            $($(
                $(#[doc = $gdoc])*
                #[arg(long, env = $genv $(, $garg = $gargv)*)]
                pub $gkey: Option<$gkind>,
            )*)*
        }

        impl $Layer {
            /// `self` (flags, then environment, as clap merged them) over
            /// `file` over the defaults.
            fn over(self, file: $Layer) -> $Settings {
                let (flags, file) = (self, file);
                settings!(@literal $Settings {
                    $(
                        $group: settings!(@literal $Group {} $(
                            $gkey $(-> $gfield)? =
                                (settings!(@pick flags file $gkey: $gkind [$($gdefault)?])),
                        )*),
                    )*
                } $(
                    $key $(-> $field)? = (settings!(@pick flags file $key: $kind [$($default)?])),
                )*)
            }
        }

        /// Every setting as declared, for tests: key, environment variable,
        /// help text and default (as written).
        #[cfg(test)]
        pub(super) const DECLARED: &[(&str, &str, &str, Option<&str>)] = &[
            $((
                stringify!($key), $env, concat!($($doc, "\n"),*), settings!(@text $($default)?),
            ),)*
            $($((
                stringify!($gkey), $genv, concat!($($gdoc, "\n"),*), settings!(@text $($gdefault)?),
            ),)*)*
        ];
    };

    // The value of one setting: the first layer that has it, else its default.
    (@pick $flags:ident $file:ident $key:ident: $kind:ty []) => {
        $flags.$key.or($file.$key).map($crate::config::values::Value::finish)
    };
    (@pick $flags:ident $file:ident $key:ident: $kind:ty [$default:literal]) => {
        $crate::config::values::Value::finish($flags.$key.or($file.$key).unwrap_or_else(|| {
            <$kind as $crate::config::values::Value>::from_default($default)
        }))
    };

    // A struct literal from `key [-> field] = value,` items.
    (@literal $S:ident { $($done:tt)* }) => { $S { $($done)* } };
    (@literal $S:ident { $($done:tt)* } $key:ident -> $field:ident = $value:expr, $($rest:tt)*) => {
        settings!(@literal $S { $($done)* $field: $value, } $($rest)*)
    };
    (@literal $S:ident { $($done:tt)* } $key:ident = $value:expr, $($rest:tt)*) => {
        settings!(@literal $S { $($done)* $key: $value, } $($rest)*)
    };

    (@text) => { None };
    (@text $default:literal) => { Some(stringify!($default)) };
}
