//! An entity's name as OpenWhisk writes it: `FullyQualifiedEntityName`.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `{path, name, version?, binding?}`; also accepted as a `"ns/pkg/name"` string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FullyQualifiedEntityName {
    pub path: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
}

impl FullyQualifiedEntityName {
    /// The namespace: the first segment of the path.
    pub fn namespace(&self) -> &str {
        self.path.split('/').find(|s| !s.is_empty()).unwrap_or("")
    }

    /// `path/name`, as OpenWhisk keys an action document.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.path.trim_matches('/'), self.name)
    }
}

impl<'de> Deserialize<'de> for FullyQualifiedEntityName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields {
            path: String,
            name: String,
            #[serde(default)]
            version: Option<String>,
            #[serde(default)]
            binding: Option<String>,
        }
        match Value::deserialize(d)? {
            Value::String(s) => {
                let s = s.trim_matches('/');
                let (path, name) = s
                    .rsplit_once('/')
                    .ok_or_else(|| D::Error::custom("qualified name needs a namespace"))?;
                Ok(FullyQualifiedEntityName {
                    path: path.into(),
                    name: name.into(),
                    version: None,
                    binding: None,
                })
            }
            v @ Value::Object(_) => {
                let f: Fields = serde_json::from_value(v).map_err(D::Error::custom)?;
                Ok(FullyQualifiedEntityName {
                    path: f.path,
                    name: f.name,
                    version: f.version,
                    binding: f.binding,
                })
            }
            _ => Err(D::Error::custom("fully qualified name malformed")),
        }
    }
}
