//! The harness itself can fail a test (STYLE §6): a fake server whose handler panicked
//! fails the test when it is dropped.

use crate::ask::{BIG, server};
use crate::harness::Env;

#[test]
#[should_panic(expected = "the handler broke")]
fn a_panicking_handler_fails_the_test() {
    let s = server(|_| panic!("the handler broke"));
    let out = Env::new(&s).run(&["-m", BIG, "--timeout", "5", "q"]);
    // The binary saw only a dropped connection; the panic surfaces when the fake is dropped.
    assert_ne!(out.code, 0, "{out}");
    drop(s);
}
