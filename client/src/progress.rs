//! Progress bars on stderr, drawn only when stderr is a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A byte-count bar (`uploading`, `downloading`); a spinner when `len` is unknown.
pub fn bytes_bar(len: Option<u64>, label: &str) -> ProgressBar {
    let pb = match len {
        Some(len) => {
            let pb = ProgressBar::with_draw_target(Some(len), target());
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix:>11} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            pb
        }
        None => {
            let pb = ProgressBar::with_draw_target(None, target());
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix:>11} {spinner} {bytes} {binary_bytes_per_sec}",
                )
                .expect("static template"),
            );
            pb
        }
    };
    pb.set_prefix(label.to_string());
    pb
}

/// A bar of verified copies out of `wanted`, with the phase as its message.
pub fn copies_bar(wanted: u32) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(u64::from(wanted)), target());
    pb.set_style(
        ProgressStyle::with_template("{prefix:>11} [{bar:30}] {pos}/{len} copies {msg} {elapsed}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_prefix("replicating");
    pb.enable_steady_tick(Duration::from_millis(250));
    pb
}
