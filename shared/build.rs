//! Compiles the protobuf contract with protox, a pure-Rust compiler, so that a
//! fresh machine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = [
        root.join("pgrollout/v1/agent.proto"),
        root.join("pgrollout/v1/control.proto"),
        root.join("pgrollout/v1/watch.proto"),
    ];
    let descriptors = protox::compile(&files, [&root])?;
    write_text_fields(&descriptors)?;
    // The agent's stream RPC is named `Connect` (DESIGN §4); the generated
    // client's `connect` constructor would collide with it, so clients are
    // built with `new(channel)` instead.
    tonic_prost_build::configure()
        .build_transport(false)
        // Boxed, so a JobResult of any other job stays as small as before.
        .boxed(".pgrollout.v1.JobResult.watch_sample")
        .compile_fds(descriptors)?;
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    Ok(())
}

/// Writes `text_fields.rs`: for every message, its text fields and its
/// message fields by number, so `text::escape_message` can escape every
/// string of any message (nested ones included) without a hand-kept list.
fn write_text_fields(
    descriptors: &protox::prost_reflect::prost_types::FileDescriptorSet,
) -> Result<(), Box<dyn std::error::Error>> {
    const TYPE_STRING: i32 = 9;
    const TYPE_MESSAGE: i32 = 11;
    fn visit(
        prefix: &str,
        message: &protox::prost_reflect::prost_types::DescriptorProto,
        out: &mut String,
    ) {
        let name = format!("{prefix}.{}", message.name());
        let mut fields = String::new();
        for field in &message.field {
            match field.r#type {
                Some(TYPE_STRING) => {
                    fields.push_str(&format!("({}, Field::Text), ", field.number()))
                }
                Some(TYPE_MESSAGE) => fields.push_str(&format!(
                    "({}, Field::Message({:?})), ",
                    field.number(),
                    field.type_name().trim_start_matches('.')
                )),
                _ => {}
            }
        }
        out.push_str(&format!("    ({name:?}, &[{fields}]),\n"));
        for nested in &message.nested_type {
            visit(&name, nested, out);
        }
    }
    let mut out = String::from("&[\n");
    for file in &descriptors.file {
        for message in &file.message_type {
            visit(file.package(), message, &mut out);
        }
    }
    out.push_str("]\n");
    let path = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("text_fields.rs");
    std::fs::write(path, out)?;
    Ok(())
}
