//! Pure-Rust throughput of the chunked AEAD, one thread and all threads (criterion).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use e2ebackup_core::chunked::{self, Algorithm};
use e2ebackup_core::parallel::default_threads;

fn bench(c: &mut Criterion) {
    let size = 64 << 20;
    let plaintext = vec![0x5au8; size];
    let key = [7u8; 32];
    let ct_len = chunked::ciphertext_len(size as u64).unwrap() as usize;
    let mut ciphertext = vec![0u8; ct_len];
    let mut group = c.benchmark_group("chunked");
    group.throughput(Throughput::Bytes(size as u64));
    group.sample_size(10);
    for algorithm in [Algorithm::Aes256Gcm, Algorithm::ChaCha20Poly1305] {
        for threads in [1, default_threads()] {
            let name = format!("encrypt/{}/{}t", algorithm.api_name(), threads);
            group.bench_function(name, |b| {
                b.iter(|| {
                    chunked::encrypt_into(
                        &key,
                        algorithm,
                        b"",
                        &plaintext,
                        &mut ciphertext,
                        threads,
                    )
                    .unwrap()
                })
            });
            let mut back = vec![0u8; size];
            chunked::encrypt_into(&key, algorithm, b"", &plaintext, &mut ciphertext, threads)
                .unwrap();
            let name = format!("decrypt/{}/{}t", algorithm.api_name(), threads);
            group.bench_function(name, |b| {
                b.iter(|| {
                    chunked::decrypt_into(&key, algorithm, b"", &ciphertext, &mut back, threads)
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
