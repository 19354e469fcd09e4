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
/// A message field names its type by its index in the table: a report of
/// a thousand routines holds ~13,000 nested messages, and finding each
/// one's type by name was a linear search of string compares.
fn write_text_fields(
    descriptors: &protox::prost_reflect::prost_types::FileDescriptorSet,
) -> Result<(), Box<dyn std::error::Error>> {
    use protox::prost_reflect::prost_types::DescriptorProto;
    const TYPE_STRING: i32 = 9;
    const TYPE_MESSAGE: i32 = 11;
    fn collect<'a>(
        prefix: &str,
        message: &'a DescriptorProto,
        out: &mut Vec<(String, &'a DescriptorProto)>,
    ) {
        let name = format!("{prefix}.{}", message.name());
        for nested in &message.nested_type {
            collect(&name, nested, out);
        }
        out.push((name, message));
    }
    let mut messages = Vec::new();
    for file in &descriptors.file {
        for message in &file.message_type {
            collect(file.package(), message, &mut messages);
        }
    }
    let index: std::collections::HashMap<&str, usize> = messages
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.as_str(), i))
        .collect();
    let mut out = String::from("&[\n");
    for (name, message) in &messages {
        let mut fields = String::new();
        for field in &message.field {
            match field.r#type {
                Some(TYPE_STRING) => {
                    fields.push_str(&format!("({}, Field::Text), ", field.number()))
                }
                Some(TYPE_MESSAGE) => {
                    let type_name = field.type_name().trim_start_matches('.');
                    let at = index
                        .get(type_name)
                        .ok_or_else(|| format!("{name}: no message type {type_name}"))?;
                    fields.push_str(&format!("({}, Field::Message({at})), ", field.number()))
                }
                _ => {}
            }
        }
        out.push_str(&format!("    ({name:?}, &[{fields}]),\n"));
    }
    out.push_str("]\n");
    let path = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("text_fields.rs");
    std::fs::write(path, out)?;
    Ok(())
}
