//! A querier that proves stable names never fail or change while something else happens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use hickory_proto::rr::RecordType;

use super::dns::{addresses, ask, rcode};

/// Asks for stable names in a loop; counts answers that differ from what they were at the start.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(usize, Vec<String>)>,
}

impl Watchdog {
    pub fn start(dns: SocketAddr, names: Vec<String>) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let want: Vec<Vec<String>> = names.iter().map(|n| addresses(&ask(dns, n, RecordType::A))).collect();
            let (mut asked, mut wrong) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                for (name, want) in names.iter().zip(&want) {
                    let resp = ask(dns, name, RecordType::A);
                    asked += 1;
                    if addresses(&resp) != *want {
                        wrong.push(format!("{name}: {:?} {:?}", rcode(&resp), addresses(&resp)));
                    }
                }
            }
            (asked, wrong)
        });
        Watchdog { stop, thread }
    }

    pub fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let (asked, wrong) = self.thread.join().unwrap();
        assert!(
            wrong.is_empty(),
            "stable names changed or vanished {} times: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        asked
    }
}
