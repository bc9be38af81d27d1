//! Structs that wait, outside yrs, for what they build on.
//!
//! yrs 0.28 keeps the structs of an update that it cannot integrate yet as a
//! "pending" update, and integrates a struct that arrives ahead of its
//! client's earlier clocks behind a hole ("skip") in its block store. The next
//! update that overlaps such a hole makes it free memory that it then reads
//! (`fuzz/known-issues/`): one message from a client was enough.
//!
//! So yrs is only ever handed structs it can integrate at once: for each
//! client, a run that starts at or below the document's clock for it, without
//! holes, each struct's dependencies (left origin, right origin, parent item)
//! already in the document or earlier in a run. Its block store then never
//! has a hole and it never keeps a pending update. Everything else waits here,
//! per client and clock, bounded by [`MAX_WAITING_STRUCTS`] and
//! [`MAX_WAITING_BYTES`], and goes to yrs with the update that brings what it
//! lacks. That is what yrs's pending updates were for, without the hole.
//!
//! Each waiting client is filed under the client and clock it waits for (its
//! own next clock when that is missing), so an update looks only at the
//! waiting clients that it can unblock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};

use yrs::{ClientID, StateVector, ID};

use crate::structs::{Kind, ListWriter, Struct, Walked};

/// Structs a document keeps waiting at most; an update that would leave more
/// waiting is refused.
pub const MAX_WAITING_STRUCTS: usize = 4096;
/// Encoded bytes of waiting structs a document keeps at most; an update that
/// would leave more waiting is refused. Twice the server's default largest
/// update, so that one such update can wait for what it builds on.
pub const MAX_WAITING_BYTES: usize = 2 * 1024 * 1024;

/// The clock of each client in a document, as far as it is known here.
pub(crate) type Clocks = HashMap<ClientID, u32>;

pub(crate) fn clock(clocks: &Clocks, client: &ClientID) -> u32 {
    clocks.get(client).copied().unwrap_or(0)
}

/// A struct waiting for what it builds on.
#[derive(Debug)]
pub(crate) struct Parked {
    len: u32,
    deps: [Option<ID>; 3],
    bytes: Box<[u8]>,
}

/// The waiting structs of a document, by client and clock.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    clients: HashMap<ClientID, BTreeMap<u32, Parked>>,
    /// For a client, the waiting clients that wait for its clock to pass a
    /// value: (that value, waiting client).
    watchers: HashMap<ClientID, BTreeSet<(u32, ClientID)>>,
    /// For a waiting client, where it is filed in `watchers`.
    awaits: HashMap<ClientID, (ClientID, u32)>,
    /// Waiting clients whose next struct could be integrated now.
    ready: HashSet<ClientID>,
    structs: usize,
    bytes: usize,
}

/// Where a struct that can be integrated comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// The incoming update: index of its client list, index of the struct.
    Incoming(usize, usize),
    /// The waiting structs, by clock.
    Waiting(u32),
}

/// What to hand yrs now, and what waits afterwards.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Per client, the run of structs to integrate, in clock order.
    pub runs: Vec<(ClientID, Vec<Source>)>,
    /// The incoming update can be handed to yrs as it is: every struct of it
    /// is in a run or already in the document, it has no hole, and no waiting
    /// struct joins it.
    pub whole: bool,
    /// Incoming structs that will wait: (client list, struct).
    park: Vec<(usize, usize)>,
    /// The clocks once the runs are integrated, for the clients they change.
    pub ends: HashMap<ClientID, u32>,
    /// Waiting clients whose next struct was looked at.
    looked_at: HashSet<ClientID>,
}

impl Plan {
    /// The waiting structs the runs take.
    pub fn taken(&self) -> Vec<(ClientID, u32)> {
        let mut taken = Vec::new();
        for (client, sources) in &self.runs {
            for source in sources {
                if let Source::Waiting(clock) = source {
                    taken.push((*client, *clock));
                }
            }
        }
        taken
    }
}

/// How the waiting structs change when a plan is carried out.
#[derive(Debug)]
pub(crate) struct Changes {
    remove: Vec<(ClientID, u32)>,
    add: Vec<(ClientID, u32, Parked)>,
}

impl Waiting {
    pub fn is_empty(&self) -> bool {
        self.structs == 0
    }

    /// Number of waiting structs and their encoded bytes.
    pub fn size(&self) -> (usize, usize) {
        (self.structs, self.bytes)
    }

    /// Whether some waiting struct could be integrated now.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    fn covering(&self, client: &ClientID, clock: u32, first: bool) -> Option<(u32, &Parked)> {
        let structs = self.clients.get(client)?;
        if first {
            let (start, parked) = structs.range(..=clock).next_back()?;
            (start + parked.len > clock).then_some((*start, parked))
        } else {
            structs.get(&clock).map(|p| (clock, p))
        }
    }

    /// Chooses, from the incoming update and the waiting structs, the runs
    /// that yrs can integrate into a document at `state`.
    ///
    /// Each client's run starts with a struct that holds its clock in `state`
    /// and goes on with the struct that starts where the last one ends, as
    /// long as every dependency is below the clock its client has reached (in
    /// `state` or in its run). A struct blocked by another client waits for
    /// that client's run to grow; one that needs a later clock of its own
    /// client ends the run. Incoming structs are preferred to waiting ones
    /// with the same start. Linear in the structs looked at, up to a log.
    pub fn plan(&self, update: &Walked, state: &Clocks) -> Plan {
        let incoming: HashMap<ClientID, usize> = update
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| (c.client, i))
            .collect();
        let mut ends: HashMap<ClientID, u32> = HashMap::new();
        let mut runs: HashMap<ClientID, Vec<Source>> = HashMap::new();
        let mut blocked_on: HashMap<ClientID, BinaryHeap<Reverse<(u32, ClientID)>>> =
            HashMap::new();
        let mut queue: VecDeque<ClientID> = update.clients.iter().map(|c| c.client).collect();
        queue.extend(self.ready.iter().copied());
        let mut queued: HashSet<ClientID> = queue.iter().copied().collect();
        let mut looked_at = HashSet::new();

        while let Some(client) = queue.pop_front() {
            queued.remove(&client);
            if self.clients.contains_key(&client) {
                looked_at.insert(client);
            }
            loop {
                let at = ends
                    .get(&client)
                    .copied()
                    .unwrap_or_else(|| clock(state, &client));
                let first = !runs.contains_key(&client);
                let candidate = incoming
                    .get(&client)
                    .and_then(|&i| {
                        let structs = &update.clients[i].structs;
                        find_incoming(structs, at, first).map(|j| {
                            let s = &structs[j];
                            (Source::Incoming(i, j), s.clock, s.len, s.deps)
                        })
                    })
                    .or_else(|| {
                        self.covering(&client, at, first)
                            .map(|(clock, p)| (Source::Waiting(clock), clock, p.len, p.deps))
                    });
                let Some((source, start, len, deps)) = candidate else {
                    break;
                };
                let reached =
                    |c: &ClientID| ends.get(c).copied().unwrap_or_else(|| clock(state, c));
                if let Some(dep) = deps
                    .iter()
                    .flatten()
                    .find(|d| d.clock >= reached(&d.client))
                {
                    if dep.client != client {
                        blocked_on
                            .entry(dep.client)
                            .or_default()
                            .push(Reverse((dep.clock, client)));
                    }
                    break;
                }
                let end = start + len;
                runs.entry(client).or_default().push(source);
                let before = ends.insert(client, end).unwrap_or(0);
                // Wake the waiting clients filed under a clock this advance passed.
                if let Some(watchers) = self.watchers.get(&client) {
                    for &(_, watcher) in watchers.range((before, LOWEST)..(end, LOWEST)) {
                        if queued.insert(watcher) {
                            queue.push_back(watcher);
                        }
                    }
                }
                if let Some(waiters) = blocked_on.get_mut(&client) {
                    while let Some(Reverse((needed, waiter))) = waiters.peek().copied() {
                        if needed >= end {
                            break;
                        }
                        waiters.pop();
                        if queued.insert(waiter) {
                            queue.push_back(waiter);
                        }
                    }
                }
            }
        }

        let mut whole = true;
        let mut park = Vec::new();
        for (i, list) in update.clients.iter().enumerate() {
            let reached = ends
                .get(&list.client)
                .copied()
                .unwrap_or_else(|| clock(state, &list.client));
            for (j, s) in list.structs.iter().enumerate() {
                if s.kind == Kind::Skip {
                    whole = false;
                } else if s.end() > reached {
                    whole = false;
                    park.push((i, j));
                }
            }
        }
        if runs
            .values()
            .flatten()
            .any(|s| matches!(s, Source::Waiting(_)))
        {
            whole = false;
        }
        Plan {
            runs: runs.into_iter().collect(),
            whole,
            park,
            ends,
            looked_at,
        }
    }

    /// The client lists of an update holding the planned runs.
    pub fn lists<'a>(
        &'a self,
        plan: &Plan,
        update: &Walked,
        bytes: &'a [u8],
    ) -> Vec<ListWriter<'a>> {
        plan.runs
            .iter()
            .map(|(client, sources)| {
                let mut first_clock = None;
                let structs = sources
                    .iter()
                    .map(|source| {
                        let (clock, encoded) = match *source {
                            Source::Incoming(i, j) => {
                                let s: &Struct = &update.clients[i].structs[j];
                                (s.clock, &bytes[s.bytes.clone()])
                            }
                            Source::Waiting(clock) => (clock, &*self.clients[client][&clock].bytes),
                        };
                        first_clock.get_or_insert(clock);
                        Ok(encoded)
                    })
                    .collect();
                ListWriter {
                    client: *client,
                    first_clock: first_clock.unwrap_or(0),
                    structs,
                }
            })
            .collect()
    }

    /// How the waiting structs change when `plan` is carried out on a
    /// document at `state`: the waiting structs taken into runs or then below
    /// their client's clock go, the incoming ones that still wait come. `None`
    /// if more would wait than the limits allow.
    pub fn changes(
        &self,
        plan: &Plan,
        update: &Walked,
        bytes: &[u8],
        state: &Clocks,
    ) -> Option<Changes> {
        let reached = |c: &ClientID| plan.ends.get(c).copied().unwrap_or_else(|| clock(state, c));
        let mut remove = plan.taken();
        let taken: HashSet<(ClientID, u32)> = remove.iter().copied().collect();
        for client in plan.ends.keys() {
            let reached = reached(client);
            for (start, parked) in self.clients.get(client).into_iter().flatten() {
                if start + parked.len <= reached && !taken.contains(&(*client, *start)) {
                    remove.push((*client, *start));
                }
            }
        }
        let mut add: Vec<(ClientID, u32, Parked)> = Vec::new();
        let mut added: HashSet<(ClientID, u32)> = HashSet::new();
        for &(i, j) in &plan.park {
            let list = &update.clients[i];
            let s = &list.structs[j];
            let key = (list.client, s.clock);
            let waits = self
                .clients
                .get(&list.client)
                .is_some_and(|w| w.contains_key(&s.clock));
            if s.end() <= reached(&list.client) || (waits && !taken.contains(&key)) {
                continue; // known, or the same struct waits already (ids are unique)
            }
            if added.insert(key) {
                let parked = Parked {
                    len: s.len,
                    deps: s.deps,
                    bytes: bytes[s.bytes.clone()].into(),
                };
                add.push((list.client, s.clock, parked));
            }
        }
        let removed_bytes: usize = remove
            .iter()
            .map(|(c, k)| self.clients[c][k].bytes.len())
            .sum();
        let structs = self.structs - remove.len() + add.len();
        let total = self.bytes - removed_bytes + add.iter().map(|a| a.2.bytes.len()).sum::<usize>();
        (structs <= MAX_WAITING_STRUCTS && total <= MAX_WAITING_BYTES)
            .then_some(Changes { remove, add })
    }

    /// Drops the waiting structs a plan took: yrs refused one of them (a
    /// parent that is not a type), and which one is not known.
    pub fn drop_taken(&mut self, plan: &Plan, state: &Clocks) {
        let changes = Changes {
            remove: plan.taken(),
            add: Vec::new(),
        };
        self.commit(plan, changes, state);
    }

    /// Carries out `changes` once the document reached `state`, and files the
    /// clients looked at or changed under what they now wait for.
    pub fn commit(&mut self, plan: &Plan, changes: Changes, state: &Clocks) {
        let mut touched: HashSet<ClientID> = plan.looked_at.clone();
        touched.extend(self.ready.drain());
        for (client, start) in changes.remove {
            if let Some(structs) = self.clients.get_mut(&client) {
                if let Some(parked) = structs.remove(&start) {
                    self.structs -= 1;
                    self.bytes -= parked.bytes.len();
                }
            }
            touched.insert(client);
        }
        for (client, start, parked) in changes.add {
            self.structs += 1;
            self.bytes += parked.bytes.len();
            self.clients
                .entry(client)
                .or_default()
                .insert(start, parked);
            touched.insert(client);
        }
        for client in touched {
            self.file(client, state);
        }
    }

    /// Drops what the document now holds, and files every waiting client
    /// again: after yrs stopped partway through an update.
    pub fn resync(&mut self, state: &Clocks) {
        let clients: Vec<ClientID> = self.clients.keys().copied().collect();
        for client in &clients {
            let reached = clock(state, client);
            let structs = self.clients.get_mut(client).expect("listed");
            let known: Vec<u32> = structs
                .iter()
                .filter(|(start, parked)| *start + parked.len <= reached)
                .map(|(start, _)| *start)
                .collect();
            for start in known {
                let parked = structs.remove(&start).expect("listed");
                self.structs -= 1;
                self.bytes -= parked.bytes.len();
            }
        }
        self.ready.clear();
        for client in clients {
            self.file(client, state);
        }
    }

    /// Files a client under the client whose clock its next struct waits for
    /// (its own when none holds its clock), or as ready, or nowhere when
    /// nothing of it waits.
    fn file(&mut self, client: ClientID, state: &Clocks) {
        if let Some((old, needed)) = self.awaits.remove(&client) {
            if let Some(set) = self.watchers.get_mut(&old) {
                set.remove(&(needed, client));
                if set.is_empty() {
                    self.watchers.remove(&old);
                }
            }
        }
        self.ready.remove(&client);
        if self.clients.get(&client).is_some_and(BTreeMap::is_empty) {
            self.clients.remove(&client);
        }
        if !self.clients.contains_key(&client) {
            return;
        }
        let reached = clock(state, &client);
        let awaited = match self.covering(&client, reached, true) {
            // Its next clock is missing: it waits for its own clock to reach
            // its first struct past it (`needed` is below what must be passed).
            None => self.clients[&client]
                .range(reached..)
                .next()
                .map(|(start, _)| (client, start.saturating_sub(1))),
            Some((_, parked)) => parked
                .deps
                .iter()
                .flatten()
                .find(|d| d.clock >= clock(state, &d.client))
                .map(|d| (d.client, d.clock)),
        };
        match awaited {
            Some((awaited, needed)) => {
                self.awaits.insert(client, (awaited, needed));
                self.watchers
                    .entry(awaited)
                    .or_default()
                    .insert((needed, client));
            }
            None => {
                self.ready.insert(client);
            }
        }
    }

    /// Adds the waiting structs to the client lists of an update of the
    /// document (`ends`: where each list ends), for a peer at `remote`.
    /// Waiting structs follow a client's structs, after a skip if there is a
    /// gap. Returns whether every waiting struct the peer lacks could be
    /// written: one that overlaps what comes before it in its list cannot.
    pub fn append_to<'a>(
        &'a self,
        lists: &mut Vec<ListWriter<'a>>,
        ends: &HashMap<ClientID, u32>,
        remote: &StateVector,
    ) -> bool {
        let mut complete = true;
        for (client, structs) in &self.clients {
            let index = match lists.iter().position(|l| l.client == *client) {
                Some(index) => index,
                None => {
                    lists.push(ListWriter {
                        client: *client,
                        first_clock: 0,
                        structs: Vec::new(),
                    });
                    lists.len() - 1
                }
            };
            let list = &mut lists[index];
            let mut end = ends.get(client).copied();
            for (start, parked) in structs {
                let struct_end = start + parked.len;
                if struct_end <= remote.get(client) {
                    continue; // the peer has it
                }
                match end {
                    None => list.first_clock = *start,
                    Some(e) if *start == e => {}
                    Some(e) if *start > e => list.structs.push(Err(start - e)),
                    Some(e) => {
                        if struct_end > e {
                            complete = false;
                        }
                        continue;
                    }
                }
                list.structs.push(Ok(&parked.bytes));
                end = Some(struct_end);
            }
        }
        complete
    }
}

/// The lowest client id, for ranges over (clock, client).
const LOWEST: ClientID = ClientID::new(0);

/// The index of the incoming struct that holds `clock` (`first`) or starts at it.
fn find_incoming(structs: &[Struct], clock: u32, first: bool) -> Option<usize> {
    let after = structs.partition_point(|s| s.clock <= clock);
    let index = after.checked_sub(1)?;
    let s = &structs[index];
    let fits = if first {
        s.end() > clock
    } else {
        s.clock == clock
    };
    (fits && s.kind != Kind::Skip).then_some(index)
}
