//! Compiles the `.proto` files with protox (pure Rust), so no system `protoc`
//! is needed on a developer machine or in CI.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "rapport/events/v1/events.proto",
        "rapport/events/v1/customer.proto",
        "rapport/events/v1/deadletter.proto",
        "rapport/events/v1/apikeys.proto",
        "rapport/events/v1/projectors.proto",
        "rapport/internal/v1/reads.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    prost_build::Config::new()
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
