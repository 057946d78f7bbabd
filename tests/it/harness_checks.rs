//! The harness itself can fail a test (STYLE §6): a fake server whose handler panicked, or
//! that a test expected to be asked and was not, fails the test when it is dropped.

use crate::ask::{BIG, server};
use crate::fake;
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

#[test]
#[should_panic(expected = "expected at least 1 chat request(s), got 0")]
fn an_expecting_fake_never_asked_fails_the_test() {
    let s = server(|r| fake::answer(&r.model(), &["never sent"])).expect_chats(1);
    // Offline with no cached model list: the run ends without asking anything.
    let out = Env::new(&s).run(&["--offline", "-m", BIG, "q"]);
    assert_ne!(out.code, 0, "{out}");
    drop(s);
}

#[test]
fn an_expecting_fake_asked_enough_passes() {
    let s = server(|r| fake::answer(&r.model(), &["hi"])).expect_chats(2);
    let env = Env::new(&s);
    for _ in 0..2 {
        let out = env.run(&["-m", BIG, "q"]);
        assert_eq!(out.code, 0, "{out}");
    }
    drop(s);
}
