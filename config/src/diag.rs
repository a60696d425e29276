//! Diagnostics: load/validation errors and analysis messages, each naming
//! the file, the document's line, `Kind/namespace/name` and the field path.
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::api::{Origin, Resource};

/// Severity, as `istioctl analyze` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// The resource is rejected (validation) or broken (analysis).
    Error,
    /// Probably a mistake.
    Warning,
    /// Informational (e.g. an ignored kind).
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        })
    }
}

/// One message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Severity.
    pub level: Level,
    /// Istio analyzer code (`IST0101`, ...); None for validation errors.
    pub code: Option<String>,
    /// Where the document is.
    pub origin: Option<Origin>,
    /// `Kind/namespace/name`.
    pub resource: Option<String>,
    /// Field path, e.g. `spec.http[0].route[0].destination.subset`.
    pub field: Option<String>,
    /// Istio's wording.
    pub message: String,
}

impl Diagnostic {
    /// An error about a field of a resource.
    pub fn error(res: &Resource, field: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic::at(Level::Error, res, field, message)
    }

    /// A message of `level` about a field of a resource.
    pub fn at(
        level: Level,
        res: &Resource,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let field = field.into();
        Diagnostic {
            level,
            code: None,
            origin: Some(res.origin.clone()),
            resource: Some(res.key()),
            field: (!field.is_empty()).then_some(field),
            message: message.into(),
        }
    }

    /// Adds an analyzer code.
    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_string());
        self
    }

    /// `true` for errors.
    pub fn is_error(&self) -> bool {
        self.level == Level::Error
    }
}

/// `Error [IST0101] file.yaml:12 VirtualService/default/reviews spec.http[0]: message`
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.level)?;
        if let Some(c) = &self.code {
            write!(f, " [{c}]")?;
        }
        if let Some(o) = &self.origin {
            write!(f, " {o}")?;
        }
        if let Some(r) = &self.resource {
            write!(f, " {r}")?;
        }
        if let Some(p) = &self.field {
            write!(f, " {p}")?;
        }
        write!(f, ": {}", self.message)
    }
}
