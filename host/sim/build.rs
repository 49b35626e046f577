//! The simulator binary's `getrandom` must be found by std's and the
//! `getrandom` crate's run-time lookup (dlsym), so it is exported.
fn main() {
    println!("cargo:rustc-link-arg-bin=stead-sim=-Wl,--export-dynamic-symbol=getrandom");
}
