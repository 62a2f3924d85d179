//! An example trawl plugin, built as a shared library and loaded at run time: `word_game`, a
//! five-letter word-guessing game (Wordle's rules) with its own reward.
//!
//! - `word_game` (environment): each task hides a word; every answer is a guess, and the
//!   environment marks each letter (`G` right place, `Y` elsewhere in the word, `.` absent) until
//!   the word is found or the guesses run out. Any scaffold that gives answers and reads feedback
//!   plays it, for example the built-in `chat` with `max_turns = 6`.
//! - `word_game` (evaluator, the environment's default): reward 1 for a first-guess win, less
//!   for each further guess, 0 for a loss.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use trawl_core::registry::{BuildContext, ComponentError, EnvironmentConfig, EvaluatorConfig};
use trawl_core::{
    async_trait, Action, ActionSpace, Artifacts, Environment, EnvironmentError, Episode,
    Evaluation, Evaluator, EvaluatorError, Message, Observation, Task, TrajectoryRecord,
};

trawl_plugin_abi::declare_plugin!();

/// Common five-letter words the secrets are drawn from.
pub const WORDS: &[&str] = &[
    "apple", "beach", "brain", "bread", "brick", "chair", "chest", "clock", "cloud", "crane",
    "dance", "dream", "drink", "earth", "field", "flame", "fruit", "glass", "grape", "green",
    "heart", "horse", "house", "juice", "knife", "laugh", "lemon", "light", "money", "mouse",
    "music", "night", "ocean", "paint", "paper", "piano", "plant", "plate", "radio", "river",
    "salad", "sheep", "shirt", "smile", "snake", "space", "spoon", "stone", "storm", "sugar",
    "table", "tiger", "toast", "tooth", "train", "truck", "water", "whale", "wheel", "world",
];

/// `[[environments]] type = "word_game"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordGameConfig {
    /// How many games (tasks).
    #[serde(default = "default_count")]
    pub count: usize,
    /// Guesses per game.
    #[serde(default = "default_guesses")]
    pub max_guesses: u32,
    /// Secret words to draw from instead of the built-in list (five ASCII letters each).
    #[serde(default)]
    pub words: Option<Vec<String>>,
}

fn default_count() -> usize {
    20
}
fn default_guesses() -> u32 {
    6
}

impl EnvironmentConfig for WordGameConfig {
    fn build(self, cx: &BuildContext) -> Result<Arc<dyn Environment>, ComponentError> {
        if self.count == 0 {
            return Err(ComponentError::at("count", "must be at least 1"));
        }
        if self.max_guesses == 0 {
            return Err(ComponentError::at("max_guesses", "must be at least 1"));
        }
        let words: Vec<String> = match &self.words {
            Some(list) => {
                for (i, w) in list.iter().enumerate() {
                    if w.len() != 5 || !w.chars().all(|c| c.is_ascii_alphabetic()) {
                        return Err(ComponentError::at(
                            &format!("words.{i}"),
                            format!("`{w}` is not five ASCII letters"),
                        ));
                    }
                }
                if list.is_empty() {
                    return Err(ComponentError::at("words", "give at least one word"));
                }
                list.iter().map(|w| w.to_ascii_lowercase()).collect()
            }
            None => WORDS.iter().map(|w| w.to_string()).collect(),
        };
        let tasks = (0..self.count)
            .map(|i| {
                let secret = &words[pick(cx.seed, i as u64, words.len())];
                Task::new(
                    format!("word-{i:03}"),
                    json!({ "secret": secret, "max_guesses": self.max_guesses }),
                )
            })
            .collect();
        Ok(Arc::new(WordGame { tasks }))
    }
}

/// A stable choice of index from (seed, game) (splitmix64).
fn pick(seed: u64, game: u64, n: usize) -> usize {
    let mut z = seed ^ game.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) % n as u64) as usize
}

trawl_core::register!(
    environment,
    "word_game",
    "Guess a hidden five-letter word with letter-by-letter feedback (example plugin)",
    WordGameConfig
);

pub struct WordGame {
    tasks: Vec<Task>,
}

#[async_trait]
impl Environment for WordGame {
    fn action_space(&self) -> ActionSpace {
        ActionSpace {
            answer: true,
            ..ActionSpace::default()
        }
    }

    async fn tasks(&self) -> Result<Vec<Task>, EnvironmentError> {
        Ok(self.tasks.clone())
    }

    async fn start(&self, task: &Task) -> Result<Box<dyn Episode>, EnvironmentError> {
        let bad = |message: &str| EnvironmentError::Start {
            task: task.id.clone(),
            message: message.into(),
        };
        let secret = task
            .str_field("secret")
            .ok_or_else(|| bad("the task has no `secret`"))?;
        let max_guesses = task
            .data
            .get("max_guesses")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("the task has no `max_guesses`"))? as u32;
        Ok(Box::new(Game {
            secret: secret.to_ascii_lowercase(),
            max_guesses,
            history: Vec::new(),
            solved: false,
        }))
    }

    fn default_evaluators(&self) -> Vec<(String, Value)> {
        vec![("word_game".into(), json!({}))]
    }
}

struct Game {
    secret: String,
    max_guesses: u32,
    history: Vec<(String, String)>,
    solved: bool,
}

/// The guess in a reply: the last word of five letters written in capitals, else the last word
/// of five letters.
pub fn extract_guess(reply: &str) -> Option<String> {
    let words: Vec<&str> = reply
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| w.len() == 5)
        .collect();
    words
        .iter()
        .rev()
        .find(|w| w.chars().all(|c| c.is_ascii_uppercase()))
        .or_else(|| words.last())
        .map(|w| w.to_ascii_lowercase())
}

/// Wordle's marks for `guess` against `secret` (both five lowercase ASCII letters): `G` right
/// letter in the right place, `Y` a letter of the word elsewhere (each secret letter counted
/// once), `.` not in the word.
pub fn marks(guess: &str, secret: &str) -> String {
    let g: Vec<u8> = guess.bytes().collect();
    let s: Vec<u8> = secret.bytes().collect();
    let mut out = vec![b'.'; g.len()];
    let mut left: BTreeMap<u8, usize> = BTreeMap::new();
    for i in 0..g.len() {
        if s.get(i) == Some(&g[i]) {
            out[i] = b'G';
        } else if let Some(&c) = s.get(i) {
            *left.entry(c).or_default() += 1;
        }
    }
    for i in 0..g.len() {
        if out[i] == b'G' {
            continue;
        }
        if let Some(n) = left.get_mut(&g[i]).filter(|n| **n > 0) {
            *n -= 1;
            out[i] = b'Y';
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[async_trait]
impl Episode for Game {
    fn opening(&self) -> Vec<Message> {
        vec![Message::user(format!(
            "I am thinking of a five-letter English word. Guess it: reply with one five-letter \
             word in capitals, like CRANE. After each guess I mark every letter: G = right \
             letter in the right place, Y = in the word but elsewhere, . = not in the word. \
             You have {} guesses.",
            self.max_guesses
        ))]
    }

    async fn act(&mut self, action: &Action) -> Result<Observation, EnvironmentError> {
        let Action::Answer { text } = action else {
            return Ok(Observation::text("Reply with a five-letter word."));
        };
        let guess = extract_guess(text);
        let marked = guess
            .as_deref()
            .map(|g| marks(g, &self.secret))
            .unwrap_or_default();
        self.history
            .push((guess.clone().unwrap_or_default(), marked.clone()));
        let left = (self.max_guesses as usize).saturating_sub(self.history.len());
        if guess.as_deref() == Some(self.secret.as_str()) {
            self.solved = true;
            return Ok(Observation::finished(format!(
                "{} — solved in {} guesses.",
                self.secret.to_ascii_uppercase(),
                self.history.len()
            )));
        }
        let feedback = match &guess {
            Some(g) => format!("{} -> {marked}", g.to_ascii_uppercase()),
            None => "No five-letter word in your reply.".to_string(),
        };
        if left == 0 {
            Ok(Observation::finished(format!(
                "{feedback}. Out of guesses: the word was {}.",
                self.secret.to_ascii_uppercase()
            )))
        } else {
            Ok(Observation::text(format!(
                "{feedback}. {left} guesses left. Reply with your next guess."
            )))
        }
    }

    async fn finish(&mut self) -> Result<Artifacts, EnvironmentError> {
        Ok(Artifacts {
            submission: self.history.last().map(|(g, _)| g.clone()),
            extra: json!({
                "solved": self.solved,
                "guesses": self.history.len(),
                "max_guesses": self.max_guesses,
                "history": self.history.iter().map(|(g, m)| json!({"guess": g, "marks": m})).collect::<Vec<_>>(),
            }),
            ..Artifacts::default()
        })
    }
}

/// `[[evaluators]] type = "word_game"`: the game's own reward.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordGameScoreConfig {}

impl EvaluatorConfig for WordGameScoreConfig {
    fn build(self, _: &BuildContext) -> Result<Arc<dyn Evaluator>, ComponentError> {
        Ok(Arc::new(WordGameScore))
    }
}

trawl_core::register!(
    evaluator,
    "word_game",
    "The word game's reward: 1 for a first-guess win, less per extra guess, 0 for a loss (example plugin)",
    WordGameScoreConfig
);

pub struct WordGameScore;

/// The reward of a game won in `guesses` of `max`: 1 for the first guess down to 1/max.
pub fn reward(solved: bool, guesses: u64, max: u64) -> f64 {
    if !solved || max == 0 {
        0.0
    } else {
        1.0 - guesses.saturating_sub(1) as f64 / max as f64
    }
}

#[async_trait]
impl Evaluator for WordGameScore {
    fn name(&self) -> &str {
        "word_game"
    }

    async fn evaluate(&self, record: &TrajectoryRecord) -> Result<Evaluation, EvaluatorError> {
        let a = &record.outcome.artifacts;
        let field = |k: &str| a.get(k).cloned();
        let (Some(Value::Bool(solved)), Some(guesses), Some(max)) = (
            field("solved"),
            field("guesses").and_then(|v| v.as_u64()),
            field("max_guesses").and_then(|v| v.as_u64()),
        ) else {
            return Err(EvaluatorError::Unscorable {
                evaluator: self.name().into(),
                task: record.task.id.clone(),
                message: "the rollout has no word_game artifacts (solved, guesses, max_guesses)"
                    .into(),
            });
        };
        let r = reward(solved, guesses, max);
        Ok(Evaluation {
            evaluator: self.name().into(),
            reward: r,
            success: solved,
            components: BTreeMap::from([
                ("solved".to_string(), f64::from(u8::from(solved))),
                ("guesses".to_string(), guesses as f64),
            ]),
            details: Value::Null,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn marks_follow_wordle_with_repeated_letters() {
        assert_eq!(marks("crane", "crane"), "GGGGG");
        assert_eq!(marks("trace", "crane"), ".GGYG");
        // The secret's one `e` is taken by the green: the other two are not marked.
        assert_eq!(marks("eerie", "apple"), "....G");
        // Only the first of two misplaced `e`s is marked.
        assert_eq!(marks("speed", "abide"), "..Y.Y");
    }

    #[test]
    fn the_guess_is_the_last_capitalised_five_letter_word() {
        assert_eq!(extract_guess("My guess is CRANE").as_deref(), Some("crane"));
        assert_eq!(
            extract_guess("I think crane, no, slate").as_deref(),
            Some("slate")
        );
        assert_eq!(
            extract_guess("CRANE? maybe later").as_deref(),
            Some("crane")
        );
        assert_eq!(extract_guess("no idea"), None);
    }

    #[tokio::test]
    async fn a_game_is_won_lost_and_scored() {
        let env = WordGameConfig {
            count: 3,
            max_guesses: 2,
            words: Some(vec!["CRANE".into()]),
        }
        .build(&BuildContext::default())
        .unwrap();
        let tasks = env.tasks().await.unwrap();
        assert_eq!(tasks.len(), 3);
        let mut ep = env.start(&tasks[0]).await.unwrap();
        let o = ep
            .act(&Action::Answer {
                text: "SLATE".into(),
            })
            .await
            .unwrap();
        assert!(
            !o.done && o.content.contains("SLATE -> ..G.G"),
            "{}",
            o.content
        );
        let o = ep
            .act(&Action::Answer {
                text: "CRANE".into(),
            })
            .await
            .unwrap();
        assert!(o.done && o.content.contains("solved in 2"), "{}", o.content);
        let a = ep.finish().await.unwrap();
        assert_eq!(a.extra["solved"], json!(true));
        assert_eq!(reward(true, 2, 2), 0.5);

        let mut lost = env.start(&tasks[1]).await.unwrap();
        lost.act(&Action::Answer { text: "hmm".into() })
            .await
            .unwrap();
        let o = lost
            .act(&Action::Answer {
                text: "TOAST".into(),
            })
            .await
            .unwrap();
        assert!(
            o.done && o.content.contains("the word was CRANE"),
            "{}",
            o.content
        );
        assert_eq!(lost.finish().await.unwrap().extra["solved"], json!(false));
    }

    #[test]
    fn a_bad_word_in_the_list_is_named() {
        let e = WordGameConfig {
            count: 1,
            max_guesses: 6,
            words: Some(vec!["apple".into(), "pear".into()]),
        }
        .build(&BuildContext::default())
        .err()
        .unwrap();
        assert_eq!(e.path, vec!["words", "1"]);
    }

    proptest! {
        #[test]
        fn marks_are_consistent(g in "[a-e]{5}", s in "[a-e]{5}") {
            let m = marks(&g, &s);
            prop_assert_eq!(m.len(), 5);
            prop_assert_eq!(m == "GGGGG", g == s);
            // Greens are exactly the matching positions.
            for (i, c) in m.chars().enumerate() {
                prop_assert_eq!(c == 'G', g.as_bytes()[i] == s.as_bytes()[i]);
            }
        }

        #[test]
        fn rewards_fall_with_guesses(max in 1u64..10, k in 1u64..10) {
            let k = k.min(max);
            let r = reward(true, k, max);
            prop_assert!(r > 0.0 && r <= 1.0);
            prop_assert!(reward(true, k, max) >= reward(true, (k + 1).min(max), max));
        }
    }
}
