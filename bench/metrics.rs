//! `cargo bench --bench metrics`: what the per-request figures cost a worker.
//!
//! Prints nanoseconds per call of what every proxied request does for `/metrics`
//! (`metrics::request` once the worker has seen the label set, `http_request`, the
//! in-flight guard), alone and from two threads at once on the same series, and the time
//! to render `/metrics` with many series. Figures only: nothing is asserted.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kubegate::metrics;

const CALLS: u32 = 2_000_000;

/// Nanoseconds per call of `f`, over [`CALLS`] calls.
fn per_call(f: impl Fn(u32)) -> f64 {
    let start = Instant::now();
    for i in 0..CALLS {
        f(black_box(i));
    }
    start.elapsed().as_nanos() as f64 / f64::from(CALLS)
}

fn main() {
    let one = Duration::from_micros(830);
    // warm: the worker's map has the series
    metrics::request(Some(1), Some(1), "get", 200, one);
    let request = per_call(|_| metrics::request(Some(1), Some(1), "get", 200, one));
    let spread = per_call(|i| {
        metrics::request(
            Some(u64::from(i % 8)),
            Some(u64::from(i % 4)),
            "list",
            200,
            one,
        )
    });
    let http = per_call(|_| metrics::http_request(200));
    let in_flight = per_call(|_| drop(black_box(metrics::InFlight::start())));
    let both: Vec<f64> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                per_call(|_| metrics::request(Some(1), Some(1), "get", 200, one))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    println!("metrics::request, one series:                 {request:6.1} ns");
    println!("metrics::request, 32 series in turn:          {spread:6.1} ns");
    println!(
        "metrics::request, 2 threads on one series:    {:6.1} ns, {:6.1} ns",
        both[0], both[1]
    );
    println!("metrics::http_request:                        {http:6.1} ns");
    println!("metrics::InFlight start and drop:             {in_flight:6.1} ns");
    println!(
        "per proxied request (request + http_request + in-flight): {:.1} ns",
        request + http + in_flight
    );

    for org in 0..500u64 {
        for status in [200, 404] {
            metrics::request(Some(org), Some(org % 7), "list", status, one);
        }
    }
    // the first render grows its buffers; then the median and the best of 25
    let size = metrics::render(&[]).len();
    let mut times: Vec<f64> = (0..25)
        .map(|_| {
            let start = Instant::now();
            black_box(metrics::render(&[]));
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "render with ~1,000 series: {:.2} ms (median of 25; best {:.2} ms), {} KiB",
        times[times.len() / 2],
        times[0],
        size / 1024
    );
}
