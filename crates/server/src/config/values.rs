//! The types a setting can be declared with, and how each goes from flag,
//! environment or file to its [`Settings`](super::Settings) field: plain text,
//! paths and numbers stay as they are; `Secs`, `Millis` and `Micros` are whole
//! numbers that become a `Duration`; `List` is comma-separated in flags and
//! environment, an array in the file. Which setting has which type is in
//! `config.rs`, not here.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{MapValueParser, RangedU64ValueParser, TypedValueParser, ValueParserFactory};
use serde::Deserialize;

/// A declared setting type. Flags and environment parse it with clap
/// (`value_parser!`), the file with serde.
pub trait Value: Sized {
    /// What a default is written as in the declaration.
    type Default;
    /// The type of the [`Settings`](super::Settings) field.
    type Out;
    /// The value a declared default stands for.
    fn from_default(default: Self::Default) -> Self;
    /// The value as the server holds it.
    fn finish(self) -> Self::Out;
}

impl Value for String {
    type Default = &'static str;
    type Out = Self;
    fn from_default(default: &'static str) -> Self {
        default.to_owned()
    }
    fn finish(self) -> Self {
        self
    }
}

impl Value for PathBuf {
    type Default = &'static str;
    type Out = Self;
    fn from_default(default: &'static str) -> Self {
        default.into()
    }
    fn finish(self) -> Self {
        self
    }
}

macro_rules! numbers {
    ($($t:ty),*) => {$(
        impl Value for $t {
            type Default = Self;
            type Out = Self;
            fn from_default(default: Self) -> Self {
                default
            }
            fn finish(self) -> Self {
                self
            }
        }
    )*};
}
numbers!(usize, u32, u64);

/// A `u64` count of some unit that the server holds as a `Duration`. clap
/// parses it exactly as a `u64` setting (same messages for bad values).
macro_rules! durations {
    ($($(#[$meta:meta])* $name:ident = $from:path;)*) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Deserialize)]
        #[serde(transparent)]
        pub struct $name(u64);

        impl Value for $name {
            type Default = u64;
            type Out = Duration;
            fn from_default(default: u64) -> Self {
                Self(default)
            }
            fn finish(self) -> Duration {
                $from(self.0)
            }
        }

        impl ValueParserFactory for $name {
            type Parser = MapValueParser<RangedU64ValueParser, fn(u64) -> Self>;
            fn value_parser() -> Self::Parser {
                RangedU64ValueParser::new().map(Self as fn(u64) -> Self)
            }
        }
    )*};
}
durations! {
    /// Whole seconds.
    Secs = Duration::from_secs;
    /// Whole milliseconds.
    Millis = Duration::from_millis;
    /// Whole microseconds.
    Micros = Duration::from_micros;
}

/// Texts: `a, b,c` in a flag or variable (trimmed, blanks dropped), an array
/// of strings in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub struct List(Vec<String>);

/// clap reads the flag as a `String` and converts it with this.
impl From<String> for List {
    fn from(text: String) -> Self {
        Self::split(&text)
    }
}

impl List {
    fn split(text: &str) -> Self {
        Self(
            text.split(',')
                .map(|item| item.trim().to_owned())
                .filter(|item| !item.is_empty())
                .collect(),
        )
    }
}

impl Value for List {
    type Default = &'static str;
    type Out = Vec<String>;
    fn from_default(text: &'static str) -> Self {
        Self::split(text)
    }
    fn finish(self) -> Vec<String> {
        self.0
    }
}
