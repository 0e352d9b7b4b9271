//! The `LinkedSegment` query: SQL for QuestDB's `/exec` that returns, for one asset, the same
//! records as the `InternalSegment` (Time + one column per history variable) from the tables
//! the ILP sink writes (see [`crate::sinks::questdb`]).
//!
//! The sink stores one row per value ("narrow"): table `<table_prefix><submodel idShort>`,
//! symbols `asset`/`element`/`quality`, one of `value_double`/`value_long`/`value_bool`/
//! `value_str`, designated timestamp `timestamp` = source timestamp. The query pivots those rows
//! into one row per timestamp with a column per variable. Only functions QuestDB and PostgreSQL
//! both offer are used (`CASE`, `max`, `bool_or`, `string_agg`, `UNION ALL`), so the text can be
//! checked on any standard SQL engine.

use crate::aas::XsType;

/// The ILP column the sink writes values of an element of type `t` into.
pub fn value_column(t: XsType) -> &'static str {
    match t {
        XsType::Float | XsType::Double | XsType::Decimal => "value_double",
        XsType::Boolean => "value_bool",
        XsType::Byte
        | XsType::Short
        | XsType::Int
        | XsType::Long
        | XsType::Integer
        | XsType::UnsignedByte
        | XsType::UnsignedShort
        | XsType::UnsignedInt
        // Values above i64::MAX go to value_str (see the sink); they do not fit a long column.
        | XsType::UnsignedLong => "value_long",
        _ => "value_str",
    }
}

/// One column of the query: a history variable.
#[derive(Debug, Clone)]
pub struct QueryColumn {
    /// Column name in the result = idShort of the variable's Property in `Metadata.Record`.
    pub name: String,
    /// ILP table (`<table_prefix><submodel idShort>`).
    pub table: String,
    /// The `element` symbol (the element's idShortPath).
    pub element: String,
    /// The element's type (selects the value column and the aggregate).
    pub value_type: XsType,
}

/// SQL returning Time + one column per variable of asset `asset` between `from` and `to`
/// (RFC 3339 timestamps, inclusive), one row per timestamp, oldest first.
pub fn records_query(asset: &str, columns: &[QueryColumn], from: &str, to: &str) -> String {
    let mut tables: Vec<&str> = columns.iter().map(|c| c.table.as_str()).collect();
    tables.dedup();
    tables.sort_unstable();
    tables.dedup();
    let parts: Vec<String> = tables
        .iter()
        .map(|table| {
            let mut select = vec!["timestamp AS \"Time\"".to_string()];
            let mut elements = Vec::new();
            for c in columns {
                if c.table == *table {
                    elements.push(literal(&c.element));
                    select.push(format!(
                        "CASE WHEN element = {} THEN {} END AS {}",
                        literal(&c.element),
                        value_column(c.value_type),
                        ident(&c.name)
                    ));
                } else {
                    // Every part of a UNION ALL needs the same columns.
                    select.push(format!("NULL AS {}", ident(&c.name)));
                }
            }
            format!(
                "SELECT {} FROM {} WHERE asset = {} AND element IN ({}) AND timestamp >= {} AND timestamp <= {}",
                select.join(", "),
                ident(table),
                literal(asset),
                elements.join(", "),
                literal(from),
                literal(to)
            )
        })
        .collect();
    let aggregates: Vec<String> = columns
        .iter()
        .map(|c| {
            let name = ident(&c.name);
            match value_column(c.value_type) {
                "value_bool" => format!("bool_or({name}) AS {name}"),
                // One row per (element, timestamp); string_agg only joins re-delivered copies.
                "value_str" => format!("string_agg({name}, '') AS {name}"),
                _ => format!("max({name}) AS {name}"),
            }
        })
        .collect();
    format!(
        "SELECT \"Time\", {} FROM ({}) AS v GROUP BY \"Time\" ORDER BY \"Time\"",
        aggregates.join(", "),
        parts.join(" UNION ALL ")
    )
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A quoted SQL identifier (keeps case, allows any idShort).
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_query_pivots_narrow_rows() {
        let cols = vec![
            QueryColumn {
                name: "SpindleSpeed".into(),
                table: "OperationalData".into(),
                element: "SpindleSpeed".into(),
                value_type: XsType::Double,
            },
            QueryColumn {
                name: "Running".into(),
                table: "OperationalData".into(),
                element: "Running".into(),
                value_type: XsType::Boolean,
            },
        ];
        let q = records_query(
            "CNC1",
            &cols,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:10:00Z",
        );
        assert_eq!(
            q,
            "SELECT \"Time\", max(\"SpindleSpeed\") AS \"SpindleSpeed\", bool_or(\"Running\") AS \"Running\" FROM (\
             SELECT timestamp AS \"Time\", CASE WHEN element = 'SpindleSpeed' THEN value_double END AS \"SpindleSpeed\", \
             CASE WHEN element = 'Running' THEN value_bool END AS \"Running\" FROM \"OperationalData\" \
             WHERE asset = 'CNC1' AND element IN ('SpindleSpeed', 'Running') \
             AND timestamp >= '2026-01-01T00:00:00Z' AND timestamp <= '2026-01-01T00:10:00Z') AS v \
             GROUP BY \"Time\" ORDER BY \"Time\""
        );
    }

    #[test]
    fn quotes_are_escaped() {
        let cols = vec![QueryColumn {
            name: "A".into(),
            table: "T\"x".into(),
            element: "it's".into(),
            value_type: XsType::String,
        }];
        let q = records_query("o'neil", &cols, "a", "b");
        assert!(q.contains("FROM \"T\"\"x\""), "{q}");
        assert!(q.contains("asset = 'o''neil'"), "{q}");
        assert!(q.contains("element = 'it''s' THEN value_str"), "{q}");
    }
}
