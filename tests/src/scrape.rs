//! Reading a service's Prometheus text exposition (`/metrics`) the way
//! Prometheus does: each sample line is a metric name, its labels and a value.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context;

/// One sample: the metric name, its labels, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// All samples of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Scrapes `http://<addr><path>`.
    pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Self> {
        let body = reqwest::get(format!("http://{addr}{path}"))
            .await?
            .error_for_status()?
            .text()
            .await?;
        Self::parse(&body)
    }

    /// Parses the text format (comments and blank lines skipped).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            samples.push(parse_line(line).with_context(|| format!("sample line {line:?}"))?);
        }
        Ok(Self { samples })
    }

    /// Every metric name exported (histogram series keep their suffixes).
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.samples.iter().map(|s| s.name.clone()).collect()
    }

    /// The value of the sample of `name` whose labels include `labels`, if
    /// exactly one matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut matching = self.matching(name, labels);
        let first = matching.next()?;
        matching.next().is_none().then_some(first.value)
    }

    /// The sum of every sample of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The samples of `name` whose labels include `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
        })
    }
}

fn parse_line(line: &str) -> anyhow::Result<Sample> {
    let (series, value) = line.rsplit_once(' ').context("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series.to_string(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').context("unclosed labels")?;
            (name.to_string(), parse_labels(body)?)
        }
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// `a="x",b="y"` (values escaped with backslashes).
fn parse_labels(body: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").context("label without a value")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => {
                    if let Some((_, c)) = chars.next() {
                        value.push(match c {
                            'n' => '\n',
                            c => c,
                        });
                    }
                }
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => anyhow::bail!("unterminated label value"),
            }
        };
        labels.insert(key.trim_start_matches(',').to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_their_labels() {
        let scrape = Scrape::parse(
            "# HELP x y\nlikes_a_total{reason=\"not_framed\",p=\"1\"} 3\nlikes_b 0.5\nh_bucket{le=\"+Inf\"} 2\n",
        )
        .expect("parses");
        assert_eq!(
            scrape.value("likes_a_total", &[("reason", "not_framed")]),
            Some(3.0)
        );
        assert_eq!(scrape.value("likes_b", &[]), Some(0.5));
        assert_eq!(scrape.value("h_bucket", &[("le", "+Inf")]), Some(2.0));
        assert_eq!(scrape.sum("likes_a_total", &[]), 3.0);
    }
}
