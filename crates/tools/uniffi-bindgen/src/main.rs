//! `uniffi-bindgen`: generates foreign-language bindings from a built `patrol-mobile` library
//! (library mode), e.g. `uniffi-bindgen generate --library target/release/libpatrol_mobile.so
//! --language kotlin --out-dir bindings/kotlin`. See `docs/mobile.md`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
