//! Numerical building blocks the fitted models share: ln Γ, log-sum-exp and a
//! Nelder–Mead minimiser. Written out here rather than pulled in so the models
//! stay dependency-free and give bit-identical results on every run.

/// Lanczos coefficients for g = 7, n = 9 (the set popularised by Numerical
/// Recipes and Wikipedia); relative error below 1e-14 for positive arguments.
const LANCZOS_G: f64 = 7.0;
const LANCZOS_COEFFICIENTS: [f64; 9] = [
    0.999_999_999_999_809_9,
    676.520_368_121_885_1,
    -1_259.139_216_722_402_8,
    771.323_428_777_653_1,
    -176.615_029_162_140_6,
    12.507_343_278_686_905,
    -0.138_571_095_265_720_12,
    9.984_369_578_019_572e-6,
    1.505_632_735_149_311_6e-7,
];

/// ln Γ(x) for x > 0 by the Lanczos approximation. Arguments below 0.5 go
/// through the reflection formula, where the series itself is least accurate.
pub(crate) fn ln_gamma(x: f64) -> f64 {
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin().abs()).ln() - ln_gamma(1.0 - x);
    }
    let shifted = x - 1.0;
    let mut series = LANCZOS_COEFFICIENTS[0];
    for (index, coefficient) in LANCZOS_COEFFICIENTS.iter().enumerate().skip(1) {
        series += coefficient / (shifted + index as f64);
    }
    let base = shifted + LANCZOS_G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (shifted + 0.5) * base.ln() - base + series.ln()
}

/// ln(e^left + e^right) without overflow; either side may be -∞.
pub(crate) fn log_add_exp(left: f64, right: f64) -> f64 {
    let larger = left.max(right);
    if larger == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    larger + ((left - larger).exp() + (right - larger).exp()).ln()
}

/// The best point a minimisation found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Minimum {
    pub(crate) point: Vec<f64>,
    pub(crate) value: f64,
}

const MAX_ITERATIONS_PER_RUN: usize = 1_000;
/// Every start first gets this many iterations; only the best goes on.
const SCOUTING_ITERATIONS: usize = 300;
const MAX_RESTARTS: usize = 2;
const VALUE_TOLERANCE: f64 = 1e-11;
const POINT_TOLERANCE: f64 = 1e-8;

/// `objective` with every non-finite value read as +∞.
fn finite_or_infinity(objective: &dyn Fn(&[f64]) -> f64) -> impl Fn(&[f64]) -> f64 + '_ {
    move |point: &[f64]| {
        let value = objective(point);
        if value.is_finite() {
            value
        } else {
            f64::INFINITY
        }
    }
}

/// Minimises `objective` from several starts: each start is scouted with a
/// short run, and the best scouted point (the earliest start wins exact
/// ties) is then run to convergence, restarted from its own answer until
/// that stops helping, because Nelder–Mead can stall on a collapsed simplex
/// well short of the optimum. Scouting keeps the cost of several starts
/// near that of one: on a flat likelihood ridge every full run would use
/// its whole iteration budget. Non-finite objective values count as +∞, so
/// the objective may refuse a region by returning NaN or ∞.
pub(crate) fn minimise_from_starts(
    objective: &dyn Fn(&[f64]) -> f64,
    starts: &[Vec<f64>],
) -> Option<Minimum> {
    let guarded = finite_or_infinity(objective);
    let mut best: Option<Minimum> = None;
    for start in starts {
        if !guarded(start).is_finite() {
            continue;
        }
        let scouted = nelder_mead(&guarded, start, 0.5, SCOUTING_ITERATIONS);
        if best
            .as_ref()
            .is_none_or(|incumbent| scouted.value < incumbent.value)
        {
            best = Some(scouted);
        }
    }
    run_to_convergence(&guarded, best?, 0.1)
}

/// Minimises `objective` from `start`, a point already near the optimum
/// (say, the optimum of a sample's objective): the full runs of
/// [`minimise_from_starts`] without its scouting, from a smaller simplex.
pub(crate) fn polish(objective: &dyn Fn(&[f64]) -> f64, start: &[f64]) -> Option<Minimum> {
    let guarded = finite_or_infinity(objective);
    let value = guarded(start);
    let current = Minimum {
        point: start.to_vec(),
        value,
    };
    run_to_convergence(&guarded, current, 0.02)
}

/// Runs Nelder–Mead from `current` until a restart stops helping.
fn run_to_convergence(
    objective: &dyn Fn(&[f64]) -> f64,
    mut current: Minimum,
    step: f64,
) -> Option<Minimum> {
    for _ in 0..=MAX_RESTARTS {
        let restarted = nelder_mead(objective, &current.point, step, MAX_ITERATIONS_PER_RUN);
        let improvement = current.value - restarted.value;
        if restarted.value < current.value {
            current = restarted;
        }
        if improvement <= VALUE_TOLERANCE * (1.0 + current.value.abs()) {
            break;
        }
    }
    Some(current).filter(|minimum| minimum.value.is_finite())
}

/// One Nelder–Mead run with the standard coefficients (reflection 1,
/// expansion 2, contraction ½, shrink ½) from an axis-aligned simplex of edge
/// `step` around `start`.
fn nelder_mead(
    objective: &dyn Fn(&[f64]) -> f64,
    start: &[f64],
    step: f64,
    max_iterations: usize,
) -> Minimum {
    let dimensions = start.len();
    let mut simplex: Vec<Vec<f64>> = vec![start.to_vec()];
    for axis in 0..dimensions {
        let mut vertex = start.to_vec();
        vertex[axis] += step;
        simplex.push(vertex);
    }
    let mut values: Vec<f64> = simplex.iter().map(|vertex| objective(vertex)).collect();

    for _ in 0..max_iterations {
        // A stable sort on the values keeps equal vertices in a fixed order.
        let mut order: Vec<usize> = (0..=dimensions).collect();
        order.sort_by(|left, right| values[*left].total_cmp(&values[*right]));
        simplex = order.iter().map(|index| simplex[*index].clone()).collect();
        values = order.iter().map(|index| values[*index]).collect();

        let best_value = values[0];
        let worst_value = values[dimensions];
        let spread = simplex[1..]
            .iter()
            .flat_map(|vertex| {
                vertex
                    .iter()
                    .zip(&simplex[0])
                    .map(|(coordinate, best)| (coordinate - best).abs())
            })
            .fold(0.0_f64, f64::max);
        let values_close = (worst_value - best_value).abs()
            <= VALUE_TOLERANCE * (1.0 + best_value.abs())
            || (best_value.is_infinite() && worst_value.is_infinite());
        if values_close && spread <= POINT_TOLERANCE {
            break;
        }

        let mut centroid = vec![0.0; dimensions];
        for vertex in &simplex[..dimensions] {
            for (sum, coordinate) in centroid.iter_mut().zip(vertex) {
                *sum += coordinate / dimensions as f64;
            }
        }
        let along = |coefficient: f64| -> Vec<f64> {
            centroid
                .iter()
                .zip(&simplex[dimensions])
                .map(|(middle, worst)| middle + coefficient * (middle - worst))
                .collect()
        };

        let reflected = along(1.0);
        let reflected_value = objective(&reflected);
        if reflected_value < values[0] {
            let expanded = along(2.0);
            let expanded_value = objective(&expanded);
            if expanded_value < reflected_value {
                simplex[dimensions] = expanded;
                values[dimensions] = expanded_value;
            } else {
                simplex[dimensions] = reflected;
                values[dimensions] = reflected_value;
            }
            continue;
        }
        if reflected_value < values[dimensions - 1] {
            simplex[dimensions] = reflected;
            values[dimensions] = reflected_value;
            continue;
        }
        let (contracted, contracted_value, accepted) = if reflected_value < worst_value {
            let outside = along(0.5);
            let outside_value = objective(&outside);
            let accepted = outside_value <= reflected_value;
            (outside, outside_value, accepted)
        } else {
            let inside = along(-0.5);
            let inside_value = objective(&inside);
            let accepted = inside_value < worst_value;
            (inside, inside_value, accepted)
        };
        if accepted {
            simplex[dimensions] = contracted;
            values[dimensions] = contracted_value;
            continue;
        }
        let best_vertex = simplex[0].clone();
        for index in 1..=dimensions {
            let shrunk: Vec<f64> = simplex[index]
                .iter()
                .zip(&best_vertex)
                .map(|(coordinate, best)| best + 0.5 * (coordinate - best))
                .collect();
            values[index] = objective(&shrunk);
            simplex[index] = shrunk;
        }
    }

    let best_index = (0..=dimensions)
        .min_by(|left, right| values[*left].total_cmp(&values[*right]))
        .unwrap_or(0);
    Minimum {
        point: simplex[best_index].clone(),
        value: values[best_index],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
        (actual - expected).abs() <= tolerance * (1.0 + expected.abs())
    }

    #[test]
    fn ln_gamma_matches_factorials_and_half_integers() {
        assert!(close(ln_gamma(1.0), 0.0, 1e-14));
        assert!(close(ln_gamma(2.0), 0.0, 1e-14));
        assert!(close(ln_gamma(10.0), 362_880.0_f64.ln(), 1e-13));
        assert!(close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-13
        ));
        // Γ(101) = 100!, ln 100! = 363.739375555563...
        assert!(close(ln_gamma(101.0), 363.739_375_555_563_47, 1e-13));
    }

    #[test]
    fn ln_gamma_obeys_the_recurrence_for_small_and_large_arguments() {
        for x in [1e-6, 0.013, 0.24, 0.49, 0.51, 0.79, 2.43, 17.5, 1_234.5] {
            assert!(
                close(ln_gamma(x + 1.0), ln_gamma(x) + x.ln(), 1e-12),
                "recurrence fails at {x}"
            );
        }
    }

    #[test]
    fn log_add_exp_is_stable_far_from_zero() {
        assert!(close(
            log_add_exp(1000.0, 1000.0),
            1000.0 + 2.0_f64.ln(),
            1e-15
        ));
        assert_eq!(log_add_exp(f64::NEG_INFINITY, -3.0), -3.0);
        assert_eq!(
            log_add_exp(f64::NEG_INFINITY, f64::NEG_INFINITY),
            f64::NEG_INFINITY
        );
    }

    #[test]
    fn nelder_mead_finds_the_rosenbrock_minimum() {
        let rosenbrock = |point: &[f64]| {
            (1.0 - point[0]).powi(2) + 100.0 * (point[1] - point[0].powi(2)).powi(2)
        };
        let minimum = minimise_from_starts(&rosenbrock, &[vec![-1.2, 1.0]]).expect("finite");
        assert!((minimum.point[0] - 1.0).abs() < 1e-4, "{minimum:?}");
        assert!((minimum.point[1] - 1.0).abs() < 1e-4, "{minimum:?}");
    }

    #[test]
    fn nelder_mead_skips_starts_where_the_objective_refuses() {
        let bowl = |point: &[f64]| {
            if point[0] < -5.0 {
                f64::NAN
            } else {
                (point[0] - 2.0).powi(2)
            }
        };
        let minimum = minimise_from_starts(&bowl, &[vec![-10.0], vec![0.0]]).expect("finite");
        assert!((minimum.point[0] - 2.0).abs() < 1e-6);
    }
}
