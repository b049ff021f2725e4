//! The writer schemas the archiver embeds in file headers, asked of the
//! registry once per id. An id the registry does not serve as an Avro schema
//! is no writer schema here: its records are archived raw, byte for byte, so
//! nothing is lost and nothing waits on a registry that is behind.

use std::collections::HashMap;
use std::time::Duration;

use schema_registry_converter::async_impl::schema_registry::{SrSettings, get_schema_by_id};
use schema_registry_converter::schema_registry_common::SchemaType;

use super::WriterSchema;
use crate::Error;

/// Writer schemas by registry id.
pub struct WriterSchemas {
    registry: SrSettings,
    known: HashMap<u32, Option<WriterSchema>>,
}

impl WriterSchemas {
    /// Schemas of the registry at `registry_url`.
    pub fn new(registry_url: &str) -> Result<Self, Error> {
        let registry = SrSettings::new_builder(registry_url.to_string())
            .set_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::Setting {
                name: "SCHEMA_REGISTRY_URL",
                message: e.to_string(),
            })?;
        Ok(Self {
            registry,
            known: HashMap::new(),
        })
    }

    /// The Avro writer schema of `id`, or `None` when the registry has no
    /// Avro schema that parses under that id. A registry that cannot be asked
    /// is [`Error::RegistryUnavailable`]; the answer is not remembered then.
    pub async fn get(&mut self, id: u32) -> Result<Option<WriterSchema>, Error> {
        if let Some(known) = self.known.get(&id) {
            return Ok(known.clone());
        }
        let schema = match get_schema_by_id(id, &self.registry).await {
            Ok(s) => s,
            Err(e) => {
                return match crate::codec::serves_avro(&self.registry, id).await {
                    // A typed verdict that the id serves no Avro event schema.
                    Some(false) => {
                        self.known.insert(id, None);
                        Ok(None)
                    }
                    _ => Err(Error::RegistryUnavailable(e.to_string())),
                };
            }
        };
        let found = match schema.schema_type {
            SchemaType::Avro if schema.references.is_empty() => {
                apache_avro::Schema::parse_str(&schema.schema)
                    .ok()
                    .map(|_| WriterSchema {
                        id,
                        json: schema.schema,
                    })
            }
            _ => None,
        };
        self.known.insert(id, found.clone());
        Ok(found)
    }
}
