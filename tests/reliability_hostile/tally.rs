//! The attacked receiver's bookkeeping: every frame's outcome (value,
//! typed error by kind, panic, timeout) counted per category, checked
//! against what the frame was meant to produce, and the probes checked
//! byte for byte.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;

use courier::{ChannelError, RecvTimeoutError};

use crate::categories::{cat_name, Expect};
use crate::messages::{probe_check, probe_data, Wire};
use crate::settings::FRAME_WAIT;
use crate::support::panic_text;
use crate::support::report::variant_name;

/// What the frames of one category gave.
#[derive(Default)]
pub struct CatTally {
    pub frames: u64,
    pub values: u64,
    pub errors: u64,
    pub violations: u64,
}

/// What the receiver saw, by category and in all.
#[derive(Default)]
pub struct Tally {
    pub cats: BTreeMap<u8, CatTally>,
    pub errors: BTreeMap<String, u64>,
    pub frames: u64,
    pub values: u64,
    pub typed_errors: u64,
    pub panics: u64,
    pub timeouts: u64,
    pub probes_ok: u64,
    next_probe: u64,
    pub violations: Vec<String>,
}

/// The name of an error's variant, e.g. `Frame.TooLarge` or `Refused`.
fn error_name(e: &ChannelError) -> String {
    match e {
        ChannelError::Frame(f) => format!("Frame.{}", variant_name(&format!("{f:?}"))),
        other => variant_name(&format!("{other:?}")),
    }
}

impl Tally {
    fn violation(&mut self, cat: u8, what: String) {
        self.cats.entry(cat).or_default().violations += 1;
        if self.violations.len() < 20 {
            self.violations
                .push(format!("frame {} ({}): {what}", self.frames, cat_name(cat)));
        }
    }

    pub fn record(
        &mut self,
        cat: u8,
        expect: Expect,
        got: std::thread::Result<Result<Wire, RecvTimeoutError>>,
    ) {
        self.frames += 1;
        self.cats.entry(cat).or_default().frames += 1;
        match got {
            Err(panic) => {
                self.panics += 1;
                let text = panic_text(&*panic);
                self.violation(cat, format!("receive panicked: {text}"));
            }
            Ok(Ok(value)) => {
                self.cats.entry(cat).or_default().values += 1;
                match expect {
                    Expect::Error => self.violation(cat, format!("accepted {value:?}")),
                    Expect::Probe => self.check_probe(cat, value),
                    Expect::Any | Expect::Value => self.values += 1,
                }
            }
            Ok(Err(RecvTimeoutError::Failed(e))) => {
                self.typed_errors += 1;
                self.cats.entry(cat).or_default().errors += 1;
                *self.errors.entry(error_name(&e)).or_default() += 1;
                if matches!(expect, Expect::Value | Expect::Probe) {
                    self.violation(cat, format!("refused: {e:?}"));
                }
            }
            Ok(Err(RecvTimeoutError::Timeout)) => {
                self.timeouts += 1;
                self.violation(cat, format!("no outcome within {FRAME_WAIT:?}"));
            }
            Ok(Err(other)) => self.violation(cat, format!("untyped outcome {other:?}")),
        }
    }

    fn check_probe(&mut self, cat: u8, value: Wire) {
        let seq = self.next_probe;
        self.next_probe += 1;
        let Wire::Probe(p) = value else {
            return self.violation(cat, format!("probe {seq} arrived as {value:?}"));
        };
        let data_ok = p.check == probe_check(p.seq, &p.data)
            && p.data[..] == probe_data(p.seq, p.data.len())[..];
        let file_ok = match &p.file {
            Some(f) => seq % 4 == 1 && f.metadata().is_ok_and(|m| m.file_type().is_char_device()),
            None => seq % 4 != 1,
        };
        if p.seq == seq && data_ok && file_ok {
            self.probes_ok += 1;
        } else {
            let (got, len) = (p.seq, p.data.len());
            self.violation(
                cat,
                format!("probe {seq} damaged: seq {got}, {len} bytes, data ok {data_ok}, fd ok {file_ok}"),
            );
        }
    }
}
