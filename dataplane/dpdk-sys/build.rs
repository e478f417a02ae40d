//! Binds to the system DPDK found with pkg-config.
//!
//! DPDK's fast path (`rte_eth_rx_burst`, `rte_pktmbuf_free`, ...) is made of `static inline` functions that
//! no shared library exports; bindgen's `wrap_static_fns` emits a C file of out-of-line wrappers which we
//! compile and link here. The build pins the DPDK version it saw so that the runtime check in the safe layer
//! can refuse a different library at start.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// DPDK 22.11 is the LTS Bulkhead is written against; its ABI (23.0) is stable across 22.11.x.
const SUPPORTED: (&str, &str) = ("22.11", "22.12");

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = match pkg_config::Config::new()
        .range_version(SUPPORTED.0..SUPPORTED.1)
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => fail(&format!(
            "DPDK {}.x was not found with pkg-config ({e}).\n\
             Install Debian's development package: `apt-get install -y libdpdk-dev dpdk-dev pkg-config`\n\
             (or run `cargo xtask deps`).",
            SUPPORTED.0
        )),
    };
    println!("cargo:rustc-env=DPDK_BUILD_VERSION={}", lib.version);
    println!("cargo:version={}", lib.version);

    // The full cflags matter: they carry `-include rte_config.h` and `-march`, without which the headers
    // describe a different machine than the one the library was built for.
    let cflags = pkg_config_cflags();
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let wrappers = out.join("static_fns");

    let bindings = bindgen::Builder::default()
        .header(manifest.join("wrapper.h").to_string_lossy())
        .clang_args(&cflags)
        .clang_arg(format!("-I{}", manifest.display()))
        .allowlist_function("rte_.*|bh_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        // Packed protocol headers that also carry an alignment (GTP, L2TPv2, and the rte_flow items that
        // embed them) cannot be expressed in Rust; Bulkhead parses packets itself and never needs them.
        .opaque_type("rte_gtp_.*|rte_l2tpv2_.*|rte_flow_item_.*")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen failed on the DPDK headers: {e}")));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");

    let mut cc = cc::Build::new();
    cc.file(wrappers.with_extension("c"))
        .file(manifest.join("shim.c"))
        .include(&manifest)
        .opt_level(3)
        .warnings(false);
    for flag in &cflags {
        cc.flag(flag);
    }
    cc.compile("bulkhead_dpdk_wrappers");
}

fn pkg_config_cflags() -> Vec<String> {
    let output = Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run pkg-config: {e}")));
    if !output.status.success() {
        fail(&String::from_utf8_lossy(&output.stderr));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    // `-include rte_config.h` is two words that must stay together.
    let mut flags = Vec::new();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-include" {
            if let Some(file) = words.next() {
                flags.push(format!("-include{file}"));
            }
        } else {
            flags.push(w.to_string());
        }
    }
    flags
}

fn fail(msg: &str) -> ! {
    eprintln!("\nerror: {msg}\n");
    panic!("dpdk-sys: {msg}");
}
