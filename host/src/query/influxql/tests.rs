use super::*;
use crate::schema::ColumnDef;

fn schema() -> DatasetSchema {
    let column = |name: &str, kind| ColumnDef { name: name.into(), kind };
    DatasetSchema {
        version: 1,
        time_column: "time".into(),
        columns: vec![
            column("_measurement", ColumnKind::Tag),
            column("host", ColumnKind::Tag),
            column("region", ColumnKind::Tag),
            column("usage", ColumnKind::Float),
            column("n", ColumnKind::Integer),
        ],
        alterations: Default::default(),
    }
}

fn select(text: &str) -> Select {
    match parse(text).unwrap().remove(0) {
        Statement::Select(select) => select,
        other => panic!("not a select: {other:?}"),
    }
}

const NOW: i64 = 1_700_003_600_000_000_000;

#[test]
fn grafana_time_filters_and_intervals_become_the_structured_range_and_buckets() {
    let text = "SELECT mean(\"usage\") FROM \"autogen\".\"cpu\" WHERE (\"host\" = 'a') AND \
                time >= 1700000000000ms and time <= 1700003600000ms GROUP BY time(1m), \"region\" fill(null)";
    let translated = translate(&select(text), &schema(), NOW).unwrap();
    let request = &translated.request;
    assert_eq!(request.time_range.start, json!(1_700_000_000_000_000_000i64));
    assert_eq!(request.time_range.end, json!(1_700_003_600_000_000_001i64));
    let downsample = request.downsample.as_ref().unwrap();
    assert_eq!(downsample.interval.as_deref(), Some("60000000000ns"));
    assert_eq!(downsample.fill, Fill::Null);
    assert_eq!(downsample.aggregations[0].function, "avg");
    assert_eq!(request.group_by, vec!["region".to_string()]);
    assert_eq!(translated.columns, vec![("c0".to_string(), "mean".to_string())]);
    // The host filter and the measurement filter are both applied.
    let filters = format!("{:?}", request.filters);
    assert!(filters.contains("\"host\"") && filters.contains("_measurement"), "{filters}");
}

#[test]
fn relative_times_are_taken_from_now() {
    let text = "SELECT max(usage), max(n) FROM cpu WHERE time > now() - 1h GROUP BY time(5m) fill(previous)";
    let translated = translate(&select(text), &schema(), NOW).unwrap();
    assert_eq!(translated.request.time_range.start, json!(NOW - 3_600_000_000_000 + 1));
    assert_eq!(translated.request.time_range.end, json!(NOW));
    assert_eq!(translated.request.downsample.unwrap().fill, Fill::Previous);
    let shown: Vec<&str> = translated.columns.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(shown, ["max", "max_1"]);
}

#[test]
fn raw_selects_keep_limit_and_order() {
    let text = "SELECT usage, host FROM cpu WHERE time >= '2023-11-14T22:13:20Z' ORDER BY time DESC LIMIT 3";
    let translated = translate(&select(text), &schema(), NOW).unwrap();
    assert_eq!(translated.request.limit, Some(3));
    assert_eq!(translated.request.order, Order::Desc);
    assert_eq!(translated.request.time_range.start, json!(1_700_000_000_000_000_000i64));
    assert_eq!(translated.request.columns.as_deref().unwrap(), ["time", "usage", "host"]);
}

#[test]
fn several_statements_parse_and_show_statements_are_recognised() {
    let statements =
        parse("SHOW DATABASES; SHOW MEASUREMENTS ON telegraf; SHOW TAG VALUES FROM cpu WITH KEY IN (\"host\", region)")
            .unwrap();
    assert_eq!(statements.len(), 3);
    assert_eq!(statements[0], Statement::ShowDatabases);
    assert_eq!(statements[1], Statement::ShowMeasurements { matching: None, limit: None });
    assert_eq!(
        statements[2],
        Statement::ShowTagValues {
            from: Some("cpu".into()),
            keys: vec!["host".into(), "region".into()],
            condition: None
        }
    );
}

#[test]
fn unsupported_constructs_are_refused_by_name() {
    let refused = [
        ("DROP MEASUREMENT cpu", "DROP"),
        ("CREATE DATABASE x", "CREATE"),
        ("SELECT mean(usage) INTO other FROM cpu", "INTO"),
        ("SELECT mean(usage) FROM (SELECT usage FROM cpu)", "subqueries"),
        ("SELECT usage FROM /c.*/", "regex"),
        ("SELECT usage + 1 FROM cpu", "arithmetic"),
        ("SELECT usage FROM cpu SLIMIT 1", "SLIMIT"),
        ("SELECT mean(usage) FROM cpu GROUP BY time(1m, 10s)", "offset"),
        ("SHOW SERIES", "SHOW SERIES"),
        ("SELECT mean(usage) FROM cpu fill(linear)", "fill(linear)"),
    ];
    for (text, named) in refused {
        let error = parse(text).unwrap_err();
        assert!(error.contains(named), "{text}: {error}");
    }
    let untranslatable = [
        ("SELECT derivative(usage) FROM cpu", "derivative"),
        ("SELECT mean(usage), usage FROM cpu", "mixing"),
        ("SELECT mean(usage) FROM cpu GROUP BY time(1m)", "lower time bound"),
        ("SELECT usage FROM cpu WHERE host =~ /a.*/", "regex"),
        ("SELECT usage FROM cpu WHERE host =~ /^h\\d$/", "regex"),
        ("SELECT nope FROM cpu", "nope"),
        ("SELECT mean(usage) FROM cpu WHERE time > now() - 1h GROUP BY usage", "not a tag"),
    ];
    for (text, named) in untranslatable {
        let error = translate(&select(text), &schema(), NOW).unwrap_err();
        assert!(error.contains(named), "{text}: {error}");
    }
}

#[test]
fn grafana_variable_regexes_become_equality_and_in_filters() {
    let cases = [
        (r"SELECT usage FROM cpu WHERE host =~ /^h1$/", r#"op: "=", value: Some(String("h1"))"#),
        (
            r"SELECT usage FROM cpu WHERE host =~ /^(h1|h\.2)$/",
            r#"op: "in", value: Some(Array [String("h1"), String("h.2")])"#,
        ),
        (r"SELECT usage FROM cpu WHERE host !~ /^(a|b)$/", r#"op: "!=", value: Some(String("b"))"#),
    ];
    for (text, expected) in cases {
        let translated = translate(&select(text), &schema(), NOW).unwrap();
        let filters = format!("{:?}", translated.request.filters);
        assert!(filters.contains(expected), "{text}: {filters}");
    }
}

#[test]
fn grafana_measurement_typeahead_matches_names() {
    let Statement::ShowMeasurements { matching: Some(matching), limit } =
        parse("SHOW MEASUREMENTS WITH MEASUREMENT =~ /(?i)CP/ LIMIT 100").unwrap().remove(0)
    else {
        panic!("not a SHOW MEASUREMENTS")
    };
    assert_eq!(limit, Some(100));
    assert!(matching.matches("cpu") && matching.matches("xcpx") && !matching.matches("mem"));
    let exact = NameMatch::from_regex("^cpu$").unwrap();
    assert!(exact.matches("cpu") && !exact.matches("cpu2"));
    assert!(NameMatch::from_regex("c.u").is_none());
    assert!(parse("SHOW MEASUREMENTS WITH MEASUREMENT =~ /c.*/").unwrap_err().contains("not supported"));
}
