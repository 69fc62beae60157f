//! Seals 1400-byte packets in place with ring's AES-256-GCM and ChaCha20-Poly1305 and prints the
//! throughput of each on this machine (how the tunnel's algorithm was picked):
//! `cargo run --release -p weft-proto --example aead_speed`.

use std::time::Instant;

use ring::aead::{AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

fn speed(alg: &'static Algorithm) -> f64 {
    let key = LessSafeKey::new(UnboundKey::new(alg, &[7u8; 32]).unwrap());
    let mut buf = vec![0u8; 1400];
    let rounds = 200_000u64;
    let start = Instant::now();
    for i in 0..rounds {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&i.to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::from(&[0u8; 16]),
                &mut buf,
            )
            .unwrap();
        let _ = std::hint::black_box(tag);
    }
    (rounds * 1400 * 8) as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn main() {
    println!("AES-256-GCM        {:.2} Gb/s", speed(&AES_256_GCM));
    println!("ChaCha20-Poly1305  {:.2} Gb/s", speed(&CHACHA20_POLY1305));
}
