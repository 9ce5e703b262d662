//! The rules of conversations: taking in what arrived from a network (each message exactly
//! once, in its thread's conversation), snoozing, finishing, reopening and answering.
//! Pure functions on [`State`], like `state.rs`: no I/O, no clock.

use std::collections::{BTreeMap, HashMap};

use crate::network::Incoming;
use crate::state::{AnnStatus, Answer, ConvStatus, Conversation, Message, Outcome, State, Unix};

/// Lookups over the conversations, rebuilt at load: (account, remote id) → conversation,
/// and (account, thread) → conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    messages: HashMap<(String, String), u64>,
    threads: HashMap<(String, String), u64>,
}

/// Which answer: conversation id and the answer's key. Not a position: messages that
/// arrive late are inserted in time order and move the ones after them.
pub type AnswerRef = (u64, String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvError {
    #[error("no conversation c{0}")]
    NoSuchConversation(u64),
    #[error("c{0} has no message from anyone else to answer")]
    NothingToAnswer(u64),
    #[error("the answer is empty")]
    EmptyAnswer,
    #[error("c{id} already has an answer on its way; wait for it (presencectl show c{id})")]
    AnswerInFlight { id: u64 },
    #[error("snooze until a time in the future")]
    SnoozeInPast,
    #[error("c{0} is already open")]
    AlreadyOpen(u64),
}

/// What an ingest did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    pub new_conversations: Vec<u64>,
    pub reopened: Vec<u64>,
    pub messages: usize,
    pub duplicates: usize,
    /// Whether a cursor moved: with no new message either, nothing needs saving.
    pub cursors_moved: bool,
}

/// When the human started owing an answer: the first message from someone else after the
/// human's last answer.
pub fn waiting_since(c: &Conversation) -> Option<Unix> {
    let after_mine = c.messages.iter().rposition(Message::mine).map_or(0, |i| i + 1);
    c.messages[after_mine..].iter().find(|m| !m.mine()).map(|m| m.at)
}

/// The key of an answer: stable for this conversation and message position.
pub fn answer_key(account: &str, conversation: u64, position: usize) -> String {
    crate::state::announcement_key(account, "answer", &format!("c{conversation}#{position}"))
}

impl Index {
    pub fn of(conversations: &BTreeMap<u64, Conversation>) -> Index {
        let mut index = Index::default();
        for (id, c) in conversations {
            index.threads.insert((c.account.clone(), c.thread.clone()), *id);
            for m in c.messages.iter().filter(|m| !m.remote_id.is_empty()) {
                index.messages.insert((c.account.clone(), m.remote_id.clone()), *id);
            }
        }
        index
    }
}

impl State {
    /// Stores newly arrived messages, each exactly once, and the account's cursors with
    /// them. A message in a snoozed or finished conversation reopens it.
    pub fn ingest_mentions(
        &mut self,
        account: &str,
        items: Vec<Incoming>,
        cursors: BTreeMap<String, String>,
    ) -> Ingested {
        let mut report = Ingested::default();
        for item in items {
            let key = (account.to_owned(), item.remote_id.clone());
            if item.remote_id.is_empty() || self.index.messages.contains_key(&key) {
                report.duplicates += 1;
                continue;
            }
            let thread_key = (account.to_owned(), item.thread.clone());
            let id = match self.index.threads.get(&thread_key) {
                Some(&id) => id,
                None => {
                    self.next_conversation += 1;
                    let id = self.next_conversation;
                    let conversation = Conversation {
                        account: account.to_owned(),
                        thread: item.thread.clone(),
                        status: ConvStatus::Open,
                        messages: Vec::new(),
                    };
                    self.conversations.insert(id, conversation);
                    self.index.threads.insert(thread_key, id);
                    report.new_conversations.push(id);
                    id
                }
            };
            let Some(c) = self.conversations.get_mut(&id) else { continue };
            if c.status != ConvStatus::Open {
                c.status = ConvStatus::Open;
                report.reopened.push(id);
            }
            let message = Message {
                remote_id: item.remote_id,
                author: item.author,
                display_name: item.display_name,
                text: item.text,
                at: item.at,
                url: item.url,
                visibility: item.visibility,
                in_reply_to: item.in_reply_to,
                answer: None,
            };
            // Networks deliver out of order; keep the thread in time order (stable, so
            // equal times keep arrival order).
            let at = c.messages.partition_point(|m| m.at <= message.at);
            c.messages.insert(at, message);
            self.index.messages.insert(key, id);
            report.messages += 1;
        }
        let stored = &mut self.accounts.entry(account.to_owned()).or_default().cursors;
        for (name, cursor) in cursors {
            if stored.get(&name) != Some(&cursor) {
                stored.insert(name, cursor);
                report.cursors_moved = true;
            }
        }
        report
    }

    fn conversation_mut(&mut self, id: u64) -> Result<&mut Conversation, ConvError> {
        self.conversations.get_mut(&id).ok_or(ConvError::NoSuchConversation(id))
    }

    pub fn snooze(&mut self, id: u64, until: Unix, now: Unix) -> Result<(), ConvError> {
        if until <= now {
            return Err(ConvError::SnoozeInPast);
        }
        self.conversation_mut(id)?.status = ConvStatus::Snoozed { until };
        Ok(())
    }

    pub fn done(&mut self, id: u64, now: Unix) -> Result<(), ConvError> {
        self.conversation_mut(id)?.status = ConvStatus::Done { at: now };
        Ok(())
    }

    pub fn reopen(&mut self, id: u64) -> Result<(), ConvError> {
        let c = self.conversation_mut(id)?;
        if c.status == ConvStatus::Open {
            return Err(ConvError::AlreadyOpen(id));
        }
        c.status = ConvStatus::Open;
        Ok(())
    }

    /// Snoozed conversations whose time has come are open again; returns them.
    pub fn wake_snoozed(&mut self, now: Unix) -> Vec<u64> {
        let mut woken = Vec::new();
        for (id, c) in self.conversations.iter_mut() {
            if let ConvStatus::Snoozed { until } = c.status {
                if until <= now {
                    c.status = ConvStatus::Open;
                    woken.push(*id);
                }
            }
        }
        woken
    }

    pub fn next_snooze_wake(&self) -> Option<Unix> {
        self.conversations
            .values()
            .filter_map(|c| match c.status {
                ConvStatus::Snoozed { until } => Some(until),
                _ => None,
            })
            .min()
    }

    /// Records the human's answer to the latest message from someone else, to be posted.
    /// Returns the message it answers (its author, for the reply's mention).
    pub fn answer(&mut self, id: u64, text: &str, now: Unix) -> Result<AnswerRef, ConvError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ConvError::EmptyAnswer);
        }
        let c = self.conversation_mut(id)?;
        let busy = c.messages.iter().any(|m| {
            m.answer.as_ref().is_some_and(|a| {
                matches!(a.status, AnnStatus::Pending | AnnStatus::InFlight { .. })
            })
        });
        if busy {
            return Err(ConvError::AnswerInFlight { id });
        }
        let parent =
            c.messages.iter().rev().find(|m| !m.mine()).ok_or(ConvError::NothingToAnswer(id))?;
        let position = c.messages.len();
        let key = answer_key(&c.account, id, position);
        let message = Message {
            remote_id: String::new(),
            author: String::new(),
            display_name: String::new(),
            text: text.to_owned(),
            // Never before the message it answers, whatever the clocks say.
            at: now.max(parent.at),
            url: None,
            visibility: parent.visibility.clone(),
            in_reply_to: Some(parent.remote_id.clone()),
            answer: Some(Answer {
                key: key.clone(),
                status: AnnStatus::Pending,
                to: parent.author.clone(),
                attempts: 0,
                in_doubt: false,
            }),
        };
        c.messages.push(message);
        Ok((id, key))
    }

    fn answer_message_mut(&mut self, (id, key): &AnswerRef) -> Option<&mut Message> {
        self.conversations
            .get_mut(id)?
            .messages
            .iter_mut()
            .find(|m| m.answer.as_ref().is_some_and(|a| &a.key == key))
    }

    pub fn answer_mut(&mut self, at: &AnswerRef) -> Option<&mut Answer> {
        self.answer_message_mut(at)?.answer.as_mut()
    }

    /// Every answer of `account` whose status `pick` accepts, oldest conversation first.
    fn answers_of(&self, account: &str, pick: impl Fn(&AnnStatus) -> bool) -> Vec<AnswerRef> {
        let mut out = Vec::new();
        for (id, c) in self.conversations.iter().filter(|(_, c)| c.account == account) {
            for a in c.messages.iter().filter_map(|m| m.answer.as_ref()) {
                if pick(&a.status) {
                    out.push((*id, a.key.clone()));
                }
            }
        }
        out
    }

    pub fn next_pending_answer(&self, account: &str) -> Option<AnswerRef> {
        self.answers_of(account, |s| *s == AnnStatus::Pending).into_iter().next()
    }

    pub fn answer_in_flight(&self, account: &str) -> Option<AnswerRef> {
        self.answers_of(account, |s| matches!(s, AnnStatus::InFlight { .. })).into_iter().next()
    }

    /// Every answer in flight, e.g. left by a crash: each is in doubt.
    pub fn answers_in_flight(&self) -> Vec<AnswerRef> {
        let mut out = Vec::new();
        for (id, c) in &self.conversations {
            for a in c.messages.iter().filter_map(|m| m.answer.as_ref()) {
                if matches!(a.status, AnnStatus::InFlight { .. }) {
                    out.push((*id, a.key.clone()));
                }
            }
        }
        out
    }

    pub fn begin_answer(&mut self, at: &AnswerRef, now: Unix) -> bool {
        match self.answer_mut(at) {
            Some(a) if a.status == AnnStatus::Pending => {
                a.status = AnnStatus::InFlight { since: now };
                a.attempts += 1;
                true
            }
            _ => false,
        }
    }

    /// Records the network's answer to an answer. Once posted, the message takes its
    /// remote id, so that the network echoing it back is recognised as a duplicate.
    pub fn finish_answer(&mut self, at: &AnswerRef, outcome: Outcome, now: Unix) {
        let Some(answer) = self.answer_mut(at) else { return };
        if !matches!(answer.status, AnnStatus::InFlight { .. }) {
            return;
        }
        let posted = match outcome {
            Outcome::Posted { remote_id, url } => {
                answer.status =
                    AnnStatus::Posted { remote_id: remote_id.clone(), url: url.clone(), at: now };
                answer.in_doubt = false;
                Some((remote_id, url))
            }
            Outcome::Retry { error, after, in_doubt } => {
                answer.in_doubt |= in_doubt;
                let wait = after.unwrap_or_else(|| crate::state::backoff(answer.attempts));
                answer.status = AnnStatus::Failed { error, retry_at: Some(now + wait) };
                None
            }
            Outcome::GiveUp { error } => {
                answer.status = AnnStatus::Failed { error, retry_at: None };
                None
            }
        };
        if let Some((remote_id, url)) = posted {
            if let Some(m) = self.answer_message_mut(at) {
                m.remote_id = remote_id.clone();
                m.url = url;
            }
            if let Some(c) = self.conversations.get(&at.0) {
                self.index.messages.insert((c.account.clone(), remote_id), at.0);
            }
        }
    }

    /// Failed answers whose retry time has come go back to pending.
    pub fn due_answer_retries(&mut self, now: Unix) -> usize {
        let mut n = 0;
        for c in self.conversations.values_mut() {
            for a in c.messages.iter_mut().filter_map(|m| m.answer.as_mut()) {
                if let AnnStatus::Failed { retry_at: Some(t), .. } = a.status {
                    if t <= now {
                        a.status = AnnStatus::Pending;
                        n += 1;
                    }
                }
            }
        }
        n
    }

    pub fn next_answer_retry(&self) -> Option<Unix> {
        self.conversations
            .values()
            .flat_map(|c| c.messages.iter().filter_map(|m| m.answer.as_ref()))
            .filter_map(|a| match a.status {
                AnnStatus::Failed { retry_at, .. } => retry_at,
                _ => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(id: &str, thread: &str, author: &str, at: Unix) -> Incoming {
        Incoming {
            remote_id: id.into(),
            thread: thread.into(),
            in_reply_to: Some(thread.into()),
            author: author.into(),
            display_name: author.to_uppercase(),
            text: format!("hello from {author}"),
            at,
            url: None,
            visibility: Some("public".into()),
        }
    }

    fn cursor(v: &str) -> BTreeMap<String, String> {
        [("notifications".to_owned(), v.to_owned())].into()
    }

    #[test]
    fn each_message_is_stored_once_in_its_thread() {
        let mut s = State::default();
        let r = s.ingest_mentions(
            "m",
            vec![incoming("1", "t1", "alice", 10), incoming("2", "t2", "bob", 11)],
            cursor("2"),
        );
        assert_eq!(r.new_conversations, vec![1, 2]);
        let r = s.ingest_mentions(
            "m",
            vec![incoming("2", "t2", "bob", 11), incoming("3", "t1", "carol", 12)],
            cursor("3"),
        );
        assert_eq!((r.messages, r.duplicates), (1, 1));
        assert!(r.new_conversations.is_empty());
        assert_eq!(s.conversations[&1].messages.len(), 2);
        assert_eq!(s.accounts["m"].cursors["notifications"], "3");
        assert!(r.cursors_moved);
        // A read that found only what is known moved nothing: the core saves nothing.
        let r = s.ingest_mentions("m", vec![incoming("3", "t1", "carol", 12)], cursor("3"));
        assert_eq!((r.messages, r.duplicates, r.cursors_moved), (0, 1, false));
        // Same ids on another account are other messages.
        assert_eq!(
            s.ingest_mentions("x", vec![incoming("1", "t1", "a", 1)], cursor("1")).messages,
            1
        );
        // The index survives a reload.
        let mut reloaded = s.clone();
        reloaded.index = Index::default();
        reloaded.reindex();
        assert_eq!(reloaded.index, s.index);
    }

    #[test]
    fn out_of_order_delivery_is_kept_in_time_order() {
        let mut s = State::default();
        s.ingest_mentions("m", vec![incoming("2", "t", "b", 20)], cursor("2"));
        s.ingest_mentions("m", vec![incoming("1", "t", "a", 10)], cursor("2"));
        let texts: Vec<_> =
            s.conversations[&1].messages.iter().map(|m| m.remote_id.as_str()).collect();
        assert_eq!(texts, ["1", "2"]);
    }

    #[test]
    fn snooze_wakes_and_new_messages_reopen() {
        let mut s = State::default();
        s.ingest_mentions("m", vec![incoming("1", "t", "alice", 10)], cursor("1"));
        assert_eq!(s.snooze(1, 5, 10), Err(ConvError::SnoozeInPast));
        s.snooze(1, 100, 10).unwrap();
        assert_eq!(s.next_snooze_wake(), Some(100));
        assert!(s.wake_snoozed(99).is_empty());
        assert_eq!(s.wake_snoozed(100), vec![1]);
        assert_eq!(s.conversations[&1].status, ConvStatus::Open);
        s.done(1, 200).unwrap();
        let r = s.ingest_mentions("m", vec![incoming("2", "t", "alice", 300)], cursor("2"));
        assert_eq!(r.reopened, vec![1]);
        assert_eq!(s.reopen(1), Err(ConvError::AlreadyOpen(1)));
        s.snooze(1, 1000, 300).unwrap();
        let r = s.ingest_mentions("m", vec![incoming("3", "t", "bob", 301)], cursor("3"));
        assert_eq!(r.reopened, vec![1], "a new message ends a snooze early");
        assert_eq!(s.done(9, 1), Err(ConvError::NoSuchConversation(9)));
    }

    #[test]
    fn answering_the_latest_message_once() {
        let mut s = State::default();
        s.ingest_mentions(
            "m",
            vec![incoming("1", "t", "alice", 10), incoming("2", "t", "bob@other", 20)],
            cursor("2"),
        );
        assert_eq!(waiting_since(&s.conversations[&1]), Some(10));
        assert_eq!(s.answer(1, "   ", 30), Err(ConvError::EmptyAnswer));
        let at = s.answer(1, "Thanks!", 30).unwrap();
        assert_eq!(at, (1, answer_key("m", 1, 2)));
        assert_eq!(s.answer(1, "again", 31), Err(ConvError::AnswerInFlight { id: 1 }));
        let a = s.conversations[&1].messages[2].answer.clone().unwrap();
        assert_eq!(a.to, "bob@other");
        assert_eq!(a.key, answer_key("m", 1, 2));
        assert_eq!(s.conversations[&1].messages[2].in_reply_to.as_deref(), Some("2"));
        assert_eq!(waiting_since(&s.conversations[&1]), None, "answered: nobody waits");
        assert_eq!(s.next_pending_answer("m"), Some(at.clone()));
        assert!(s.begin_answer(&at, 31));
        assert_eq!(s.answer_in_flight("m"), Some(at.clone()));
        assert_eq!(s.answers_in_flight(), vec![at.clone()]);
        // A late message inserted before the answer does not lose it.
        s.ingest_mentions("m", vec![incoming("0", "t", "early", 5)], cursor("2"));
        s.finish_answer(
            &at,
            Outcome::Retry { error: "503".into(), after: Some(5), in_doubt: true },
            32,
        );
        assert_eq!(s.next_answer_retry(), Some(37));
        assert_eq!(s.due_answer_retries(37), 1);
        assert!(s.begin_answer(&at, 38));
        s.finish_answer(&at, Outcome::Posted { remote_id: "9".into(), url: Some("u".into()) }, 39);
        assert_eq!(s.conversations[&1].messages[3].remote_id, "9");
        // The network echoing our own answer back is a duplicate, not a new message.
        let echo = s.ingest_mentions("m", vec![incoming("9", "t", "me", 39)], cursor("9"));
        assert_eq!(echo.duplicates, 1);
        // A reply to the answer makes the human owe one again.
        s.ingest_mentions("m", vec![incoming("10", "t", "bob@other", 50)], cursor("10"));
        assert_eq!(waiting_since(&s.conversations[&1]), Some(50));
    }

    #[test]
    fn nothing_to_answer_in_an_empty_thread() {
        let mut s = State::default();
        assert_eq!(s.answer(1, "hi", 1), Err(ConvError::NoSuchConversation(1)));
    }
}
