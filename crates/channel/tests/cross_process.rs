//! Across real processes: a child receives a typed message carrying a
//! pipe's write end and a `Sender`, writes through the one and answers
//! through the other; and a `Receiver` handed to a child keeps working
//! there, with end of stream once the parent's senders are gone.

#[path = "../../transport/tests/common/mod.rs"]
mod roles;

use std::io::{Read, Write};
use std::time::Duration;

use courier_channel::{Config, Fd, Receiver, Sender};
use roles::CHILD_TIMEOUT;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Job {
    text: String,
    output: Fd<std::io::PipeWriter>,
    reply: Sender<Answer>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Answer {
    pid: u32,
    bytes_written: usize,
}

#[derive(Serialize, Deserialize)]
enum Control {
    /// A receiver the child should drain and count.
    Drain(Receiver<u64>),
}

const ROLES: &[(&str, fn())] = &[("worker", worker), ("drainer", drainer)];

#[test]
#[ignore = "child role: run by the other tests of this file"]
fn role_entry() {
    roles::run_role(ROLES)
}

/// Receives one Job, writes its text into the pipe, answers on `reply`.
fn worker() {
    let rx = Receiver::<Job>::from_socket(roles::connect_to_parent(), Config::new());
    let mut job = rx.recv_timeout(CHILD_TIMEOUT).expect("job");
    job.output
        .write_all(job.text.as_bytes())
        .expect("write to the pipe");
    drop(job.output);
    let answer = Answer {
        pid: std::process::id(),
        bytes_written: job.text.len(),
    };
    job.reply.send(answer).expect("answer");
}

/// Receives a Receiver<u64>, sums what arrives on it until end of stream,
/// and reports the sum on the control connection.
fn drainer() {
    let conn = roles::connect_to_parent();
    let control = Receiver::<Control>::from_socket(conn.try_clone().unwrap(), Config::new());
    let Control::Drain(numbers) = control.recv_timeout(CHILD_TIMEOUT).expect("receiver");
    let mut sum = 0;
    loop {
        match numbers.recv_timeout(CHILD_TIMEOUT) {
            Ok(n) => sum += n,
            Err(courier_channel::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("drain: {e}"),
        }
    }
    Sender::<u64>::from_socket(conn, Config::new())
        .send(sum)
        .expect("report");
}

#[test]
fn a_child_uses_a_passed_pipe_and_answers_on_a_passed_sender() {
    let (mut child, conn) = roles::spawn_connected("worker");
    let jobs = Sender::<Job>::from_socket(conn, Config::new());
    let (answers_tx, answers_rx) = courier_channel::channel::<Answer>().unwrap();
    let (mut reader, writer) = std::io::pipe().unwrap();
    let text = "written by the child through a passed fd".to_string();
    jobs.send(Job {
        text: text.clone(),
        output: Fd::new(writer),
        reply: answers_tx,
    })
    .unwrap();

    let answer = answers_rx
        .recv_timeout(CHILD_TIMEOUT)
        .expect("answer from the child");
    assert_eq!(
        answer,
        Answer {
            pid: child.pid() as u32,
            bytes_written: text.len()
        }
    );
    child.wait_success();
    // The child held the only copies of the write end and of the Sender.
    let mut got = String::new();
    reader.read_to_string(&mut got).unwrap();
    assert_eq!(got, text);
    assert!(matches!(
        answers_rx.recv_timeout(Duration::from_secs(5)),
        Err(courier_channel::RecvTimeoutError::Disconnected)
    ));
}

#[test]
fn a_receiver_sent_to_a_child_drains_then_sees_disconnect() {
    let (mut child, conn) = roles::spawn_connected("drainer");
    let control = Sender::<Control>::from_socket(conn.try_clone().unwrap(), Config::new());
    let (tx, rx) = courier_channel::channel::<u64>().unwrap();
    control.send(Control::Drain(rx)).unwrap();
    for n in 1..=100 {
        tx.send(n).unwrap();
    }
    drop(tx); // the last sender: the child's receiver reaches end of stream
    let report = Receiver::<u64>::from_socket(conn, Config::new());
    assert_eq!(report.recv_timeout(CHILD_TIMEOUT).expect("sum"), 5050);
    child.wait_success();
    // The child's end of the connection is gone with it.
    assert!(matches!(
        report.recv_timeout(Duration::from_secs(5)),
        Err(courier_channel::RecvTimeoutError::Disconnected)
    ));
}
