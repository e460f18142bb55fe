//! Reading figures out of a Prometheus text exposition (`/metrics` of the operator and the
//! replicas).

/// The sum of every sample of `name` whose labels include each `key="value"` of `labels`
/// (0 when there is none).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let matches = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_the_samples_of_one_name_with_the_given_labels() {
        let text = "# HELP x_total x\n\
                    x_total{kind=\"pull\",result=\"ok\"} 3\n\
                    x_total{kind=\"pull\",result=\"error\"} 1\n\
                    x_total{kind=\"restore\",result=\"ok\"} 2\n\
                    x_totally 9\n\
                    y 5\n";
        assert_eq!(super::sum(text, "x_total", &[("kind", "pull")]), 4.0);
        assert_eq!(
            super::sum(text, "x_total", &[("kind", "restore"), ("result", "ok")]),
            2.0
        );
        assert_eq!(super::sum(text, "x_total", &[]), 6.0);
        assert_eq!(super::sum(text, "y", &[]), 5.0);
        assert_eq!(super::sum(text, "z", &[]), 0.0);
    }
}
