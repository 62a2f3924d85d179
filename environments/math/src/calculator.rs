//! A safe arithmetic evaluator for the `calculator` tool: numbers, `+ - * / % ^`, parentheses,
//! unary signs and a few functions. It parses and computes; nothing is ever executed.

const MAX_LEN: usize = 500;
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalcError {
    #[error("expression is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("unexpected `{0}` at position {1}")]
    Unexpected(String, usize),
    #[error("expression ended early")]
    Incomplete,
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("division by zero")]
    DivisionByZero,
    #[error("unknown function `{0}` (known: sqrt, abs, round, floor, ceil)")]
    UnknownFunction(String),
    #[error("result is not a finite number")]
    NotFinite,
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    depth: usize,
}

/// Evaluates `expr` and returns the value.
pub fn evaluate(expr: &str) -> Result<f64, CalcError> {
    if expr.len() > MAX_LEN {
        return Err(CalcError::TooLong);
    }
    let cleaned = expr
        .replace(['×', '·'], "*")
        .replace('÷', "/")
        .replace("**", "^");
    let mut p = Parser {
        src: cleaned.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let v = p.expr()?;
    p.skip_ws();
    if p.pos < p.src.len() {
        return Err(CalcError::Unexpected(
            (p.src[p.pos] as char).to_string(),
            p.pos,
        ));
    }
    if v.is_finite() {
        Ok(v)
    } else {
        Err(CalcError::NotFinite)
    }
}

/// Formats a result the way a person writes it: integers without a decimal point.
pub fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{:.10}", v);
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.src.len() && self.src[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.src.get(self.pos).copied()
    }

    fn enter(&mut self) -> Result<(), CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(CalcError::TooDeep)
        } else {
            Ok(())
        }
    }

    fn expr(&mut self) -> Result<f64, CalcError> {
        let mut v = self.term()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.pos += 1;
            let r = self.term()?;
            v = if op == b'+' { v + r } else { v - r };
        }
        Ok(v)
    }

    fn term(&mut self) -> Result<f64, CalcError> {
        let mut v = self.unary()?;
        while let Some(op @ (b'*' | b'/' | b'%')) = self.peek() {
            self.pos += 1;
            let r = self.unary()?;
            v = match op {
                b'*' => v * r,
                _ if r == 0.0 => return Err(CalcError::DivisionByZero),
                b'/' => v / r,
                _ => v % r,
            };
        }
        Ok(v)
    }

    fn unary(&mut self) -> Result<f64, CalcError> {
        match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                self.enter()?;
                let v = -self.unary()?;
                self.depth -= 1;
                Ok(v)
            }
            Some(b'+') => {
                self.pos += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<f64, CalcError> {
        let base = self.atom()?;
        if self.peek() == Some(b'^') {
            self.pos += 1;
            self.enter()?;
            let exp = self.unary()?; // right-associative
            self.depth -= 1;
            return Ok(base.powf(exp));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<f64, CalcError> {
        match self.peek() {
            None => Err(CalcError::Incomplete),
            Some(b'(') => {
                self.pos += 1;
                self.enter()?;
                let v = self.expr()?;
                self.depth -= 1;
                match self.peek() {
                    Some(b')') => {
                        self.pos += 1;
                        Ok(v)
                    }
                    Some(c) => Err(CalcError::Unexpected((c as char).to_string(), self.pos)),
                    None => Err(CalcError::Incomplete),
                }
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.pos;
                while self.pos < self.src.len()
                    && (self.src[self.pos].is_ascii_digit()
                        || matches!(self.src[self.pos], b'.' | b',' | b'_'))
                {
                    self.pos += 1;
                }
                let text: String =
                    String::from_utf8_lossy(&self.src[start..self.pos]).replace([',', '_'], "");
                text.parse::<f64>()
                    .map_err(|_| CalcError::Unexpected(text.clone(), start))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.pos < self.src.len() && self.src[self.pos].is_ascii_alphabetic() {
                    self.pos += 1;
                }
                let name = String::from_utf8_lossy(&self.src[start..self.pos]).to_lowercase();
                if name == "pi" {
                    return Ok(std::f64::consts::PI);
                }
                let f: fn(f64) -> f64 = match name.as_str() {
                    "sqrt" => f64::sqrt,
                    "abs" => f64::abs,
                    "round" => f64::round,
                    "floor" => f64::floor,
                    "ceil" => f64::ceil,
                    _ => return Err(CalcError::UnknownFunction(name)),
                };
                if self.peek() != Some(b'(') {
                    return Err(CalcError::Incomplete);
                }
                Ok(f(self.atom()?))
            }
            Some(c) => Err(CalcError::Unexpected((c as char).to_string(), self.pos)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(evaluate("2 + 3 * 4").unwrap(), 14.0);
        assert_eq!(evaluate("(2 + 3) * 4").unwrap(), 20.0);
        assert_eq!(evaluate("2 ^ 3 ^ 2").unwrap(), 512.0);
        assert_eq!(evaluate("-2 ^ 2").unwrap(), -4.0);
        assert_eq!(evaluate("10 % 4").unwrap(), 2.0);
        assert_eq!(evaluate("1,000 * 3").unwrap(), 3000.0);
        assert_eq!(evaluate("sqrt(16) + abs(-2)").unwrap(), 6.0);
        assert_eq!(evaluate("7 × 6 ÷ 3").unwrap(), 14.0);
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        assert_eq!(evaluate("1/0"), Err(CalcError::DivisionByZero));
        assert_eq!(evaluate("2 +"), Err(CalcError::Incomplete));
        assert!(matches!(evaluate("2 $ 3"), Err(CalcError::Unexpected(..))));
        assert!(matches!(
            evaluate("import os"),
            Err(CalcError::UnknownFunction(_))
        ));
        assert_eq!(evaluate(&"(".repeat(100)), Err(CalcError::TooDeep));
        assert_eq!(evaluate("10^400"), Err(CalcError::NotFinite));
    }

    #[test]
    fn formats_integers_plainly() {
        assert_eq!(format_value(42.0), "42");
        assert_eq!(format_value(2.5), "2.5");
        assert_eq!(format_value(1.0 / 3.0), "0.3333333333");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,120}") {
            let _ = evaluate(&s);
        }

        #[test]
        fn integer_arithmetic_is_exact(a in -10_000i64..10_000, b in -10_000i64..10_000, c in 1i64..100) {
            let v = evaluate(&format!("{a} + {b} * {c} - ({a})")).unwrap();
            prop_assert_eq!(v, (b * c) as f64);
        }
    }
}
