//! Simulated customers for tests and benchmarks, never for scores: a
//! SplitMix64 generator, the few distributions the model-recovery tests
//! draw from, and the BG/NBD purchase process. Seeded explicitly so every
//! run simulates the same customers. (A generator this small is written
//! here rather than taken from `rand` to keep that crate out of the
//! library's dependencies.)

use super::bg_nbd::{BgNbdParameters, DAYS_PER_WEEK, weeks};
use super::occasions::PurchaseOccasion;

pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// Uniform on the open interval (0, 1), so logarithms stay finite.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1_u64 << 53) as f64
    }

    pub fn exponential(&mut self, rate: f64) -> f64 {
        -self.uniform().ln() / rate
    }

    pub fn standard_normal(&mut self) -> f64 {
        let radius = (-2.0 * self.uniform().ln()).sqrt();
        radius * (2.0 * std::f64::consts::PI * self.uniform()).cos()
    }

    /// Gamma(shape, scale) by Marsaglia & Tsang (2000), with the usual
    /// U^(1/shape) boost for shapes below one.
    pub fn gamma(&mut self, shape: f64, scale: f64) -> f64 {
        if shape < 1.0 {
            let boost = self.uniform().powf(1.0 / shape);
            return self.gamma(shape + 1.0, scale) * boost;
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let normal = self.standard_normal();
            let v = (1.0 + c * normal).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * normal * normal + d - d * v + d * v.ln() {
                return d * v * scale;
            }
        }
    }

    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let left = self.gamma(a, 1.0);
        let right = self.gamma(b, 1.0);
        left / (left + right)
    }
}

/// Simulates the BG/NBD process in continuous time for a customer who made
/// their first purchase on `first_day`, and returns their occasions (whole
/// days, same-day purchases merged, 1 000 minor units each) up to `as_of`.
pub fn simulate_bg_nbd_customer(
    random: &mut SplitMix64,
    truth: &BgNbdParameters,
    first_day: i64,
    as_of: i64,
) -> Vec<PurchaseOccasion> {
    let purchase_rate = random.gamma(truth.r, 1.0 / truth.alpha);
    let dropout = random.beta(truth.a, truth.b);
    let horizon_weeks = weeks(as_of - first_day);
    let mut days = vec![first_day];
    let mut time_weeks = 0.0;
    loop {
        time_weeks += random.exponential(purchase_rate);
        if time_weeks > horizon_weeks {
            break;
        }
        let day = first_day + (time_weeks * DAYS_PER_WEEK).floor() as i64;
        if days.last() != Some(&day) {
            days.push(day);
        }
        if random.uniform() < dropout {
            break;
        }
    }
    days.into_iter()
        .map(|day| PurchaseOccasion {
            day,
            net_minor: 1_000,
            orders: 1,
        })
        .collect()
}

#[cfg(test)]
#[test]
fn sample_moments_match_the_distributions() {
    let mut random = SplitMix64::new(7);
    let draws = 20_000;
    let gamma_mean: f64 = (0..draws)
        .map(|_| random.gamma(0.24, 1.0 / 4.41))
        .sum::<f64>()
        / draws as f64;
    assert!((gamma_mean - 0.24 / 4.41).abs() < 0.004, "{gamma_mean}");
    let beta_mean: f64 = (0..draws).map(|_| random.beta(0.79, 2.43)).sum::<f64>() / draws as f64;
    assert!((beta_mean - 0.79 / 3.22).abs() < 0.01, "{beta_mean}");
}
