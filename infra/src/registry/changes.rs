//! Which changes make a schema incompatible with the registered versions,
//! in words an operator can act on ("field `item_type` removed", "field
//! `user_id` changed type long -> string"). The registry decides; this names
//! why, since its own answer may not (Apicurio's compatibility answer is a
//! bare boolean). The rule is FULL_TRANSITIVE's, field by field, with Avro's
//! own resolution rules (apache-avro's `SchemaCompatibility`) deciding
//! whether a changed type still reads both ways.

use apache_avro::Schema;
use apache_avro::schema::{RecordField, RecordSchema};
use apache_avro::schema_compatibility::SchemaCompatibility;

use super::Version;

/// `text` as an Avro schema; `source_name` names it in the error.
pub fn parse(source_name: &str, text: &str) -> Result<Schema, crate::Error> {
    Schema::parse_str(text).map_err(|e| crate::Error::InvalidSchema {
        source_name: source_name.to_string(),
        reason: e.to_string(),
    })
}

/// The changes of `new` that break full compatibility with any of
/// `versions`, each named once (the first version it breaks with is cited).
/// A schema that does not parse is named as such.
pub fn against_versions(versions: &[Version], new: &str) -> Vec<String> {
    let new = match Schema::parse_str(new) {
        Ok(schema) => schema,
        Err(e) => return vec![format!("the schema does not parse: {e}")],
    };
    let mut found: Vec<String> = Vec::new();
    for version in versions {
        let Ok(old) = Schema::parse_str(&version.schema) else {
            continue;
        };
        for change in between(&old, &new) {
            if !found.iter().any(|f| f.starts_with(&change)) {
                found.push(format!("{change} (against version {})", version.version));
            }
        }
    }
    found
}

/// The changes from `old` to `new` that a reader of one cannot resolve when
/// reading data written with the other.
pub fn between(old: &Schema, new: &Schema) -> Vec<String> {
    match (old, new) {
        (Schema::Record(old), Schema::Record(new)) => records(old, new),
        _ if mutual(old, new) => Vec::new(),
        _ => vec![format!(
            "the schema changed type {} -> {}",
            type_name(old),
            type_name(new)
        )],
    }
}

fn records(old: &RecordSchema, new: &RecordSchema) -> Vec<String> {
    let mut changes = Vec::new();
    let aliased = new
        .aliases
        .iter()
        .flatten()
        .any(|a| a.name() == old.name.name());
    if old.name != new.name && !aliased {
        changes.push(format!(
            "record renamed {} -> {}",
            old.name.fullname(None),
            new.name.fullname(None)
        ));
    }
    for field in &old.fields {
        match counterpart(field, &new.fields) {
            None if field.default.is_none() => changes.push(format!(
                "field `{}` removed (it has no default, so readers of the older schema cannot \
                 read new records)",
                field.name
            )),
            None => {}
            Some(now) if !mutual(&field.schema, &now.schema) => changes.push(format!(
                "field `{}` changed type {} -> {}",
                field.name,
                type_name(&field.schema),
                type_name(&now.schema)
            )),
            Some(_) => {}
        }
    }
    for field in &new.fields {
        if counterpart(field, &old.fields).is_none() && field.default.is_none() {
            changes.push(format!(
                "field `{}` added without a default (records written before cannot be read \
                 with it)",
                field.name
            ));
        }
    }
    changes
}

/// The field of `fields` that `field` resolves to: same name, or named by
/// the other's aliases.
fn counterpart<'a>(field: &RecordField, fields: &'a [RecordField]) -> Option<&'a RecordField> {
    fields.iter().find(|f| {
        f.name == field.name || f.aliases.contains(&field.name) || field.aliases.contains(&f.name)
    })
}

/// Whether data of either schema is read by the other.
fn mutual(a: &Schema, b: &Schema) -> bool {
    a == b || SchemaCompatibility::mutual_read(a, b).is_ok()
}

/// A schema's type as written in a schema file (`long`, `["null","string"]`).
fn type_name(schema: &Schema) -> String {
    match serde_json::to_value(schema) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => format!("{:?}", apache_avro::schema::SchemaKind::from(schema)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = include_str!("../../../schemas/like_event.avsc");

    fn edited(edit: impl FnOnce(&mut Vec<serde_json::Value>)) -> String {
        let mut schema: serde_json::Value = serde_json::from_str(V1).unwrap();
        edit(schema["fields"].as_array_mut().unwrap());
        schema.to_string()
    }

    fn changes(new: &str) -> Vec<String> {
        let versions = [Version {
            version: 1,
            id: 1,
            schema: V1.into(),
        }];
        against_versions(&versions, new)
    }

    #[test]
    fn an_optional_field_with_a_default_is_no_change_that_breaks() {
        let added = edited(|f| {
            f.push(
                serde_json::json!({"name": "source", "type": ["null", "string"], "default": null}),
            )
        });
        assert_eq!(changes(&added), Vec::<String>::new());
    }

    #[test]
    fn a_removed_field_without_default_is_named() {
        let removed = edited(|f| f.retain(|f| f["name"] != "item_type"));
        let found = changes(&removed);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("field `item_type` removed"),
            "{found:?}"
        );
    }

    #[test]
    fn a_changed_type_is_named_with_both_types() {
        let changed = edited(|f| f[1]["type"] = "string".into());
        let found = changes(&changed);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("field `user_id` changed type long -> string"),
            "{found:?}"
        );
    }

    #[test]
    fn a_field_added_without_default_is_named() {
        let added = edited(|f| f.push(serde_json::json!({"name": "client", "type": "string"})));
        let found = changes(&added);
        assert!(
            found.len() == 1 && found[0].starts_with("field `client` added without a default"),
            "{found:?}"
        );
    }

    #[test]
    fn a_widened_type_is_refused_because_old_readers_cannot_narrow_it() {
        let widened = edited(|f| f[3]["type"] = "long".into());
        let found = changes(&widened);
        assert!(
            found.len() == 1 && found[0].starts_with("field `item_type` changed type int -> long"),
            "{found:?}"
        );
    }
}
