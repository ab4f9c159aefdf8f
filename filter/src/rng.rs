//! A tiny per-worker pseudo-random sequence (xorshift64*), for spreading requests over
//! weighted targets and jittering back-off. Not for secrets: seeded once per worker.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    /// A zero seed would stay zero forever; it is replaced by a fixed odd constant.
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    pub fn state(self) -> u64 {
        self.0
    }

    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn the_sequence_moves_and_spreads() {
        let mut r = Rng::new(0);
        let values: Vec<u32> = (0..1000).map(|_| r.next_u32()).collect();
        let odd = values.iter().filter(|v| *v % 2 == 1).count();
        assert!((400..600).contains(&odd), "{odd}");
        assert_ne!(values[0], values[1]);
    }
}
