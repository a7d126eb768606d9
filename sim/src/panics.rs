//! Invariant 7: no panic anywhere. turmoil swallows the panics of spawned tasks, so a hook
//! records every panic of the simulation's thread (each world runs on one thread; worlds on
//! other threads keep their own records).

use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

static HOOK: Once = Once::new();

/// Installs the recording hook (once per process; the previous hook still runs).
pub fn install() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string());
            let line = format!("panic{at}: {msg} (simulated time {:?})", crate::record::now());
            PANICS.with(|p| p.borrow_mut().push(line));
            previous(info);
        }));
    });
}

/// Forgets this thread's panics (at the start of a world).
pub fn reset() {
    PANICS.with(|p| p.borrow_mut().clear());
}

/// This thread's panics since the last reset.
pub fn take() -> Vec<String> {
    PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()))
}
