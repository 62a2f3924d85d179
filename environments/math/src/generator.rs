//! A seeded generator of arithmetic word problems in five graded levels, so the math environment
//! runs with no data at all. The same seed gives the same tasks on every machine and every trawl
//! version (the generator uses its own small PRNG, not a library's, for that reason).

use serde_json::json;
use trawl_core::Task;

/// SplitMix64: tiny, fast, and fixed forever.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const NAMES: [&str; 16] = [
    "Ava", "Ben", "Chloe", "Diego", "Emma", "Farah", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena",
    "Mateo", "Nora", "Omar", "Priya",
];
const ITEMS: [&str; 10] = [
    "apples", "marbles", "stickers", "books", "pencils", "cookies", "stamps", "shells", "cards",
    "coins",
];
const CONTAINERS: [(&str, &str); 5] = [
    ("box", "boxes"),
    ("bag", "bags"),
    ("jar", "jars"),
    ("crate", "crates"),
    ("basket", "baskets"),
];

/// Levels the generator knows.
pub const LEVELS: std::ops::RangeInclusive<u8> = 1..=5;

/// One problem of `level` (1 = one small addition or subtraction … 5 = percentages and
/// fractions over several steps) and its integer answer.
fn problem(rng: &mut Rng, level: u8) -> (String, i64) {
    let name = rng.pick(&NAMES);
    let item = rng.pick(&ITEMS);
    let (one, many) = CONTAINERS[(rng.next() % CONTAINERS.len() as u64) as usize];
    match (level, rng.next() % 2) {
        (1, 0) => {
            let (a, b) = (rng.range(2, 20), rng.range(2, 20));
            (format!("{name} has {a} {item}. {name} gets {b} more. How many {item} does {name} have now?"), a + b)
        }
        (1, _) => {
            let a = rng.range(10, 30);
            let b = rng.range(1, a - 1);
            (format!("{name} had {a} {item} and gave {b} of them to a friend. How many {item} does {name} have left?"), a - b)
        }
        (2, 0) => {
            let (a, b) = (rng.range(3, 12), rng.range(3, 12));
            (
                format!("Each {one} holds {a} {item}. How many {item} are in {b} {many}?"),
                a * b,
            )
        }
        (2, _) => {
            let (per, kids) = (rng.range(2, 12), rng.range(2, 9));
            (
                format!("{name} shares {} {item} equally among {kids} friends. How many {item} does each friend get?", per * kids),
                per,
            )
        }
        (3, 0) => {
            let (n, price, extra) = (rng.range(2, 9), rng.range(2, 15), rng.range(1, 20));
            (
                format!("{name} buys {n} notebooks that cost ${price} each and a backpack that costs ${extra}. How many dollars does {name} spend in total?"),
                n * price + extra,
            )
        }
        (3, _) => {
            let (rows, per, more) = (rng.range(3, 12), rng.range(3, 12), rng.range(2, 30));
            (
                format!("A garden has {rows} rows with {per} plants in each row. The gardener plants {more} more plants. How many plants are in the garden now?"),
                rows * per + more,
            )
        }
        (4, 0) => {
            let mon = rng.range(10, 60);
            let less = rng.range(1, mon);
            (
                format!(
                    "A shop sold {mon} {item} on Monday, twice as many on Tuesday, and {less} fewer on Wednesday than on Tuesday. How many {item} did the shop sell over the three days?"
                ),
                mon + 2 * mon + (2 * mon - less),
            )
        }
        (4, _) => {
            let (rate, hours, days) = (rng.range(8, 25), rng.range(3, 8), rng.range(2, 6));
            let spent = rng.range(10, rate * hours * days - 1);
            (
                format!(
                    "{name} earns ${rate} per hour and works {hours} hours a day for {days} days. Then {name} spends ${spent}. How many dollars does {name} have left?"
                ),
                rate * hours * days - spent,
            )
        }
        (_, 0) => {
            let pct = [10, 20, 25, 50, 75][(rng.next() % 5) as usize];
            let price = rng.range(2, 40) * 20;
            let tax = rng.range(1, 15);
            (
                format!(
                    "A jacket costs ${price}. It is on sale for {pct}% off, and then a ${tax} shipping fee is added. How many dollars does the jacket cost in the end?"
                ),
                price - price * pct / 100 + tax,
            )
        }
        (_, _) => {
            let (num, den) =
                [(1, 2), (1, 4), (3, 4), (2, 3), (1, 3), (2, 5)][(rng.next() % 6) as usize];
            let capacity = den * rng.range(4, 40) * 5;
            let full = capacity * num / den;
            let used = rng.range(1, full);
            (
                format!(
                    "A tank holds {capacity} liters when full. It is {num}/{den} full, and then {used} liters are used. How many liters are left in the tank?"
                ),
                full - used,
            )
        }
    }
}

/// `count` tasks spread evenly over `levels`, from `seed`. Ids are `gen-L<level>-<n>`, stable for
/// a given (seed, levels, count).
pub fn generate(seed: u64, levels: &[u8], count: usize) -> Vec<Task> {
    let mut tasks = Vec::with_capacity(count);
    let mut per_level = vec![0usize; levels.len()];
    for i in 0..count {
        let li = i % levels.len();
        let level = levels[li];
        let n = per_level[li];
        per_level[li] += 1;
        // Each task has its own stream, so adding levels or tasks never changes existing ones.
        let mut rng =
            Rng(seed ^ (u64::from(level) << 56) ^ (n as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let (question, answer) = problem(&mut rng, level);
        tasks.push(Task::new(
            format!("gen-L{level}-{n}"),
            json!({"question": question, "answer": answer.to_string(), "level": level, "source": "generator"}),
        ));
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_tasks_and_answers_are_consistent() {
        let a = generate(7, &[1, 2, 3, 4, 5], 50);
        let b = generate(7, &[1, 2, 3, 4, 5], 50);
        assert_eq!(a, b);
        assert_ne!(a, generate(8, &[1, 2, 3, 4, 5], 50));
        for t in &a {
            let answer: i64 = t.data["answer"].as_str().unwrap().parse().unwrap();
            assert!(answer >= 0, "{t:?}");
        }
        let ids: std::collections::HashSet<_> = a.iter().map(|t| &t.id).collect();
        assert_eq!(ids.len(), 50);
    }

    #[test]
    fn growing_the_count_keeps_existing_tasks() {
        let small = generate(3, &[2, 4], 6);
        let big = generate(3, &[2, 4], 20);
        for t in &small {
            assert!(big.contains(t));
        }
    }
}
