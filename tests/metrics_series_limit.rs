//! `/metrics` past its limit of label sets: further label sets are counted under
//! `org="other"`, so that made-up cluster ids cannot grow the registry without bound.
//!
//! In a file of its own: the registry is global to the process, and filling it would
//! send the series of other tests to `org="other"` too.

mod common;

use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::gateway::TestGateway;
use common::http::{call, client};
use kubegate::metrics::MAX_SERIES;

/// `/metrics`, as text.
async fn scrape(gw: &TestGateway) -> String {
    let mut res = client()
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    String::from_utf8(res.body().limit(64 << 20).await.unwrap().to_vec()).unwrap()
}

/// The `kubegate_requests_total` samples: (labels, value).
fn request_series(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("kubegate_requests_total{"))
        .map(|l| {
            let (labels, value) = l.rsplit_once("} ").unwrap();
            (labels.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// Scrapes until `want` holds (5 s at most); returns the last scrape.
async fn scrape_until(gw: &TestGateway, want: impl Fn(&[(String, f64)]) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(gw).await;
        if want(&request_series(&text)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics never showed what was expected: {:?}",
            request_series(&text)
                .into_iter()
                .filter(|(l, _)| !l.starts_with("org=\"9"))
                .collect::<Vec<_>>()
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

fn value(series: &[(String, f64)], labels: &str) -> Option<f64> {
    series.iter().find(|(l, _)| l == labels).map(|(_, v)| *v)
}

#[actix_rt::test]
async fn label_sets_past_the_limit_are_counted_under_org_other() {
    assert_eq!(MAX_SERIES, 20_000, "the limit the README states");
    let api = ApiServer::start();
    let gw = TestGateway::builder()
        .member(1, "alice", "admin")
        .cluster(1, "dev", &api.kubeconfig_with_client_cert())
        .start();
    let alice = gw.token("alice");
    let cluster = gw.cluster_ids[0];
    let known = format!("org=\"1\",cluster=\"{cluster}\",verb=\"list\",code=\"200\"");
    let pods = |cluster: u64| gw.proxy_url(1, cluster, "/api/v1/namespaces/default/pods");
    assert_eq!(call("GET", &pods(cluster), Some(&alice), None).await.0, 200);
    let text = scrape_until(&gw, |s| value(s, &known) == Some(1.0)).await;
    let before = request_series(&text).len();

    // label sets up to one short of the limit, as many made-up orgs would make them
    // (counted straight into the registry: 20,000 requests would take long)
    for i in 0..(MAX_SERIES - before - 1) as u64 {
        kubegate::metrics::request(
            Some(9_000_000 + i),
            Some(1),
            "watch",
            200,
            Duration::from_millis(1),
        );
    }

    // the 20,000th label set still has its own labels
    let (code, _) = call("GET", &pods(7001), Some(&alice), None).await;
    let last = format!("org=\"1\",cluster=\"7001\",verb=\"list\",code=\"{code}\"");
    scrape_until(&gw, |s| value(s, &last) == Some(1.0)).await;

    // past it: made-up cluster ids all count under org="other", cluster="other"
    for made_up in 7002..7012 {
        assert_eq!(
            call("GET", &pods(made_up), Some(&alice), None).await.0,
            code
        );
    }
    let other = format!("org=\"other\",cluster=\"other\",verb=\"list\",code=\"{code}\"");
    let text = scrape_until(&gw, |s| value(s, &other) == Some(10.0)).await;
    let series = request_series(&text);
    assert_eq!(
        series.len(),
        MAX_SERIES + 1,
        "20,000 label sets and the overflow series"
    );
    assert!(
        !series
            .iter()
            .any(|(l, _)| (7002..7012).any(|c| l.contains(&format!("cluster=\"{c}\"")))),
        "no series of its own for a cluster past the limit"
    );
    // the label sets already there go on counting under their own labels
    assert_eq!(call("GET", &pods(cluster), Some(&alice), None).await.0, 200);
    let text = scrape_until(&gw, |s| value(s, &known) == Some(2.0)).await;
    assert_eq!(request_series(&text).len(), MAX_SERIES + 1);
    // the latency histogram of the overflow is labelled the same way
    assert!(
        text.contains(
            "kubegate_request_duration_seconds_count{org=\"other\",cluster=\"other\",verb=\"list\"} 10"
        ),
        "{}",
        text.lines()
            .filter(|l| l.contains("org=\"other\""))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
