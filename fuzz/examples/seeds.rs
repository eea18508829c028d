//! Writes the seed corpus: `cargo run --example seeds -- <dir>` writes
//! `<dir>/<target>/<name>` for each target's seeds (see `src/seeds.rs`).

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "seeds".into());
    for target in courier_fuzz::seeds::TARGETS {
        let out = std::path::Path::new(&dir).join(target);
        std::fs::create_dir_all(&out)?;
        let seeds = courier_fuzz::seeds::seeds(target);
        for (name, data) in &seeds {
            std::fs::write(out.join(name), data)?;
        }
        println!("{target}: {} seeds in {}", seeds.len(), out.display());
    }
    Ok(())
}
