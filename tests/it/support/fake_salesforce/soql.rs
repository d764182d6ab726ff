//! The SOQL the fake understands (the subset the poller sends), and its
//! answers.

use super::*;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Op(String),
    Open,
    Close,
    Comma,
}

fn tokens(q: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = q.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\n' | '\t' => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1
            }
            ')' => {
                out.push(Token::Close);
                i += 1
            }
            ',' => {
                out.push(Token::Comma);
                i += 1
            }
            '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '\'')
                    .ok_or("unterminated string")?;
                out.push(Token::Text(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            '<' | '>' | '=' | '!' => {
                let two = chars.get(i + 1) == Some(&'=');
                let op: String = chars[i..i + 1 + two as usize].iter().collect();
                out.push(Token::Op(op));
                i += 1 + two as usize;
            }
            _ => {
                let end = chars[i..]
                    .iter()
                    .position(|c| " ()',<>=!".contains(*c))
                    .map_or(chars.len(), |p| i + p);
                out.push(Token::Word(chars[i..end].iter().collect()));
                i = end;
            }
        }
    }
    Ok(out)
}

#[derive(Debug)]
enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Cmp(String, String, Token),
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }
    fn next(&mut self) -> Option<Token> {
        self.at += 1;
        self.tokens.get(self.at - 1).cloned()
    }
    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn expr(&mut self) -> Result<Cond, String> {
        let mut left = self.term()?;
        while self.keyword("OR") {
            left = Cond::Or(Box::new(left), Box::new(self.term()?));
        }
        Ok(left)
    }
    fn term(&mut self) -> Result<Cond, String> {
        let mut left = self.factor()?;
        while self.keyword("AND") {
            left = Cond::And(Box::new(left), Box::new(self.factor()?));
        }
        Ok(left)
    }
    fn factor(&mut self) -> Result<Cond, String> {
        match self.next() {
            Some(Token::Open) => {
                let inner = self.expr()?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err("missing )".into()),
                }
            }
            Some(Token::Word(field)) => match (self.next(), self.next()) {
                (Some(Token::Op(op)), Some(value)) => Ok(Cond::Cmp(field, op, value)),
                _ => Err(format!("a comparison of {field} is incomplete")),
            },
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

fn ms(raw: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .or_else(|_| chrono::DateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.timestamp_millis())
}

fn holds(cond: &Cond, contact: &Value) -> Result<bool, String> {
    Ok(match cond {
        Cond::And(a, b) => holds(a, contact)? && holds(b, contact)?,
        Cond::Or(a, b) => holds(a, contact)? || holds(b, contact)?,
        Cond::Cmp(field, op, value) => {
            let ordering = match (field.as_str(), value) {
                ("SystemModstamp", Token::Word(literal)) => {
                    let have = contact[field].as_str().and_then(ms).ok_or("no stamp")?;
                    let want = ms(literal).ok_or_else(|| format!("bad dateTime {literal}"))?;
                    have.cmp(&want)
                }
                ("Id", Token::Text(id)) => contact["Id"].as_str().unwrap_or("").cmp(id.as_str()),
                ("IsDeleted", Token::Word(b)) => {
                    let want = b.eq_ignore_ascii_case("true");
                    contact["IsDeleted"].as_bool().unwrap_or(false).cmp(&want)
                }
                _ => return Err(format!("cannot compare {field} with {value:?}")),
            };
            match op.as_str() {
                "=" => ordering.is_eq(),
                "!=" => ordering.is_ne(),
                "<" => ordering.is_lt(),
                "<=" => ordering.is_le(),
                ">" => ordering.is_gt(),
                ">=" => ordering.is_ge(),
                _ => return Err(format!("unknown operator {op}")),
            }
        }
    })
}

/// Fields a Contact has in this fake.
const FIELDS: [&str; 10] = [
    "Id",
    "FirstName",
    "LastName",
    "Email",
    "Phone",
    "Description",
    "IsDeleted",
    "SystemModstamp",
    "LastModifiedById",
    EXTERNAL_ID_FIELD,
];

fn run(state: &State, q: &str, all: bool) -> Result<Vec<Value>, String> {
    let mut p = Parser {
        tokens: tokens(q)?,
        at: 0,
    };
    if !p.keyword("SELECT") {
        return Err("expected SELECT".into());
    }
    let mut fields = Vec::new();
    loop {
        match p.next() {
            Some(Token::Word(f)) if FIELDS.contains(&f.as_str()) => fields.push(f),
            Some(Token::Word(f)) => {
                return Err(format!("No such column '{f}' on entity 'Contact'"))
            }
            other => return Err(format!("unexpected {other:?} in the field list")),
        }
        if p.peek() != Some(&Token::Comma) {
            break;
        }
        p.at += 1;
    }
    if !p.keyword("FROM") || !p.keyword("Contact") {
        return Err("expected FROM Contact".into());
    }
    let cond = if p.keyword("WHERE") {
        Some(p.expr()?)
    } else {
        None
    };
    let mut ordered = false;
    if p.keyword("ORDER") {
        if !p.keyword("BY") {
            return Err("expected BY".into());
        }
        let order: Vec<Token> = p.tokens[p.at..]
            .iter()
            .take_while(|t| !matches!(t, Token::Word(w) if w.eq_ignore_ascii_case("LIMIT")))
            .cloned()
            .collect();
        let want = tokens("SystemModstamp ASC, Id ASC").unwrap();
        if order != want {
            return Err(format!(
                "this fake orders only by SystemModstamp ASC, Id ASC: {order:?}"
            ));
        }
        p.at += order.len();
        ordered = true;
    }
    let limit = if p.keyword("LIMIT") {
        match p.next() {
            Some(Token::Word(n)) => n.parse::<usize>().map_err(|_| "bad LIMIT")?,
            _ => return Err("bad LIMIT".into()),
        }
    } else {
        usize::MAX
    };
    if p.peek().is_some() {
        return Err(format!("unexpected {:?}", p.peek()));
    }
    let mut matching = Vec::new();
    for contact in state.contacts.values() {
        if !all && contact["IsDeleted"] == true {
            continue;
        }
        if let Some(cond) = &cond {
            if !holds(cond, contact)? {
                continue;
            }
        }
        matching.push(contact);
    }
    if ordered {
        matching.sort_by_key(|c| {
            (
                c["SystemModstamp"].as_str().and_then(ms),
                c["Id"].as_str().unwrap_or("").to_owned(),
            )
        });
    }
    Ok(matching
        .into_iter()
        .take(limit)
        .map(|c| {
            let mut out = Map::new();
            out.insert("attributes".into(), json!({"type": "Contact"}));
            for f in &fields {
                out.insert(f.clone(), c.get(f).cloned().unwrap_or(Value::Null));
            }
            Value::Object(out)
        })
        .collect())
}

pub(super) fn answer(state: &State, raw_query: &str, all: bool) -> Reply {
    let q: HashMap<String, String> = serde_urlencoded::from_str(raw_query).unwrap_or_default();
    let Some(soql) = q.get("q") else {
        return error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", "no q", &[]);
    };
    match run(state, soql, all) {
        Ok(records) => (
            StatusCode::OK,
            Some(json!({"totalSize": records.len(), "done": true, "records": records})),
        ),
        Err(message) => error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", &message, &[]),
    }
}
