//! The MQTT thread's side: one connection at a time, batches from the offline buffer
//! published in order and released only when acknowledged, the session's retained
//! messages on every connect, subscriptions into the agent's inbox.

use super::*;

/// A retained session message: birth, policy-table part or report.
#[derive(Clone, Debug)]
pub(super) struct Retained {
    topic: String,
    payload: Vec<u8>,
    /// Bundle reports go out until acknowledged; birth and tables are sent again on
    /// every connect anyway.
    report: bool,
    json: bool,
}

/// What a publish of this connection carries.
#[derive(Clone, Debug)]
pub(super) enum Sent {
    Batch(BatchKey),
    Retained(Retained),
}

pub(super) struct Worker {
    pub(super) client: Client,
    pub(super) topics: AgentTopics,
    pub(super) session: SharedSession,
    pub(super) subscriptions: Vec<String>,
    pub(super) inbox: async_channel::Sender<Inbound>,
    pub(super) buffer: SharedBuffer,
    pub(super) wake: async_channel::Receiver<()>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) broker: String,
    pub(super) user: Option<String>,
    pub(super) ack_timeout: Duration,
    /// Set while the broker refuses our publishes: the reconnect backoff then keeps
    /// growing instead of restarting at every connect.
    pub(super) penalty: Arc<AtomicBool>,
    pub(super) link: Arc<BrokerLink>,
    /// Batches queued in this connection and not acknowledged yet, with when.
    pub(super) in_flight: HashMap<BatchKey, Instant>,
    /// Session messages of this connection not queued yet (the queue was full).
    pub(super) outbox: VecDeque<Retained>,
    /// What each upcoming [`Event::PublishSent`] belongs to, in request order.
    pub(super) expected: VecDeque<Sent>,
    /// Sent and waiting for their PUBACK, by packet id.
    pub(super) pkids: HashMap<u16, Sent>,
    pub(super) connected: bool,
    /// Packet ids can no longer be matched to publishes (the broker acknowledged out of
    /// order and an id was reused): the connection is being dropped and remade.
    pub(super) resyncing: bool,
    pub(super) last_error: Option<String>,
}

impl Worker {
    pub(super) async fn run(&mut self, connection: Connection) {
        // The event loop's `poll` is not cancel-safe while it connects: raced against
        // other branches of a select, a slow handshake would be abandoned and restarted
        // forever. It gets a task of its own and reports through a channel.
        let (events_tx, mut events) = tokio::sync::mpsc::channel(64);
        let poller = tokio::spawn(drive_event_loop(
            connection,
            events_tx,
            self.stop.clone(),
            self.penalty.clone(),
        ));
        let mut accepting = true;
        // Also bounds how long a shutdown request waits to be noticed.
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(Ok(event)) => self.on_event(event),
                    Some(Err(failure)) => self.on_failure(&failure),
                    None => break,
                },
                woken = self.wake.recv(), if accepting => match woken {
                    Ok(()) => {
                        let (changed, fresh) = {
                            let mut guard = lock_session(&self.session);
                            (std::mem::take(&mut guard.1), guard.0.fresh_status.take())
                        };
                        if changed && self.connected {
                            self.queue_session();
                        } else if let (Some(status), true) = (fresh, self.connected) {
                            // Not connected: the next connect's birth carries it.
                            self.queue_status(status);
                        }
                        self.send();
                    }
                    Err(_) => accepting = false,
                },
                _ = tick.tick() => {
                    lock(&self.buffer).sync();
                    self.check_acks();
                    self.send();
                }
            }
            let left = lock(&self.buffer).len();
            if self.stop.load(Ordering::Relaxed) || (!accepting && left == 0) {
                break;
            }
        }
        lock(&self.buffer).sync();
        if self.connected && self.client.try_disconnect().is_ok() {
            // Give the poller a moment to write the DISCONNECT.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Some(Ok(event)) = events.recv().await {
                    if matches!(event, Event::DisconnectSent) {
                        break;
                    }
                }
            })
            .await;
        }
        self.stop.store(true, Ordering::Relaxed);
        drop(events);
        let _ = tokio::time::timeout(Duration::from_secs(1), poller).await;
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected {
                version,
                fell_back_from,
                ..
            } => {
                self.connected = true;
                self.resyncing = false;
                self.link.on_connect();
                log::info!("MQTT: connected to {} ({version})", self.broker);
                if let Some(refused) = fell_back_from {
                    log::warn!(
                        "MQTT: broker {} does not speak {refused}; speaking {version} (mqtt_version = auto)",
                        self.broker
                    );
                }
                self.last_error = None;
                self.queue_session();
                if !self.subscriptions.is_empty()
                    && let Err(e) = self.client.try_subscribe_many(&self.subscriptions)
                {
                    log::warn!(
                        "MQTT: cannot subscribe to {}: {e}",
                        self.subscriptions.join(", ")
                    );
                }
                self.send();
            }
            Event::Message(publish) => {
                let Some(topic) = publish.topic() else { return };
                if !self.subscriptions.iter().any(|s| s == topic) {
                    return;
                }
                let inbound = Inbound {
                    topic: topic.to_owned(),
                    payload: publish.payload().to_vec(),
                };
                if self.inbox.try_send(inbound).is_err() {
                    // Retained bundles come back on the next connect.
                    log::warn!(
                        "MQTT: dropped a message on {topic} (the agent has {INBOX_MESSAGES} waiting)"
                    );
                }
            }
            Event::SubAck { results, .. } => {
                for (filter, result) in self.subscriptions.iter().zip(results) {
                    if let Err(code) = result {
                        log::error!(
                            "MQTT: {}",
                            refusal::subscription_refused(
                                &self.broker,
                                filter,
                                code,
                                self.user.as_deref()
                            )
                        );
                    }
                }
            }
            Event::PubAck { pkid, refused } => self.on_puback(pkid, refused),
            Event::PublishSent { pkid } => {
                if self.resyncing {
                    return;
                }
                if let Some(sent) = self.expected.pop_front() {
                    self.pkids.insert(pkid, sent);
                }
            }
            Event::PublishDeferred { pkid } => {
                // The publish waits for an id still in flight: from here on, packet ids
                // cannot be matched to batches. Start a fresh connection; everything
                // unacknowledged is sent again from the buffer.
                log::debug!("MQTT: packet id {pkid} reused before its PUBACK; reconnecting");
                self.resync();
            }
            Event::DisconnectSent | Event::Other => {}
        }
    }

    fn on_puback(&mut self, pkid: u16, refused: Option<Code>) {
        if self.resyncing {
            return;
        }
        let Some(sent) = self.pkids.remove(&pkid) else {
            return;
        };
        if let Some(code) = refused {
            let topic = match &sent {
                Sent::Batch(_) => self.topics.events.clone(),
                Sent::Retained(r) => r.topic.clone(),
            };
            let message =
                refusal::publish_refused(&self.broker, &topic, code, self.user.as_deref());
            if self.last_error.as_deref() != Some(message.as_str()) {
                log::error!("MQTT: {message}; batches stay buffered");
                self.last_error = Some(message);
            }
            if let Sent::Retained(r) = sent
                && r.report
            {
                self.requeue_report(r);
            }
            // Reconnect with a growing delay: the batch stays in the buffer and is
            // offered again then.
            self.penalty.store(true, Ordering::Relaxed);
            self.resync();
            return;
        }
        if let Sent::Batch(key) = sent {
            self.penalty.store(false, Ordering::Relaxed);
            self.in_flight.remove(&key);
            lock(&self.buffer).acknowledge(&key);
        }
        self.send();
    }

    /// A batch waiting longer than the ack timeout for its PUBACK: start over on a new
    /// connection, which sends everything unacknowledged again.
    fn check_acks(&mut self) {
        if !self.connected {
            return;
        }
        if self.resyncing {
            // The DISCONNECT may not have fit in the request queue: ask again.
            self.resync();
            return;
        }
        let overdue = self
            .in_flight
            .values()
            .filter(|queued| queued.elapsed() > self.ack_timeout)
            .count();
        if overdue > 0 {
            log::warn!(
                "MQTT: broker {} has not acknowledged {overdue} batch(es) for {}s; reconnecting to send them again",
                self.broker,
                self.ack_timeout.as_secs()
            );
            self.resync();
        }
    }

    /// Ends this connection (the next one sends everything unacknowledged again);
    /// until it ends, nothing more is sent and acknowledgements are not matched.
    fn resync(&mut self) {
        self.resyncing = true;
        if self.client.try_disconnect().is_err() {
            log::debug!("MQTT: request queue full; disconnecting at the next tick");
        }
    }

    fn on_failure(&mut self, failure: &Failure) {
        let message = failure.to_string();
        self.link.on_failure(&message);
        if self.connected || self.last_error.as_deref() != Some(message.as_str()) {
            log::warn!("MQTT: {message}");
            self.last_error = Some(message);
        }
        self.connected = false;
        // Reports not acknowledged go out again on the next connection.
        let unacknowledged: Vec<Retained> = self
            .pkids
            .drain()
            .map(|(_, sent)| sent)
            .chain(self.expected.drain(..))
            .filter_map(|sent| match sent {
                Sent::Retained(r) if r.report => Some(r),
                _ => None,
            })
            .chain(self.outbox.drain(..).filter(|r| r.report))
            .collect();
        for report in unacknowledged {
            self.requeue_report(report);
        }
        self.in_flight.clear();
    }

    /// Puts a report back into the session, unless a newer one for its topic waits.
    fn requeue_report(&mut self, report: Retained) {
        let mut guard = lock_session(&self.session);
        if !guard.0.retained.iter().any(|(t, _)| *t == report.topic) {
            guard.0.retained.push((report.topic, report.payload));
            guard.1 = true;
        }
    }

    /// A refreshed birth into the outbox, alone.
    fn queue_status(&mut self, status: String) {
        self.outbox.push_back(Retained {
            topic: self.topics.status.clone(),
            payload: status.into_bytes(),
            report: false,
            json: true,
        });
    }

    /// Birth, waiting reports and the policy table into the outbox (published before
    /// any batch queued after them).
    fn queue_session(&mut self) {
        let session = {
            let mut guard = lock_session(&self.session);
            guard.1 = false;
            // The birth below is the freshest status already.
            guard.0.fresh_status = None;
            let snapshot = guard.0.clone();
            guard.0.retained.clear();
            snapshot
        };
        self.outbox.push_back(Retained {
            topic: self.topics.status.clone(),
            payload: session.birth.into_bytes(),
            report: false,
            json: true,
        });
        for (topic, payload) in session.retained {
            self.outbox.push_back(Retained {
                topic,
                payload,
                report: true,
                json: true,
            });
        }
        for (i, table) in session.policy_tables.into_iter().enumerate() {
            self.outbox.push_back(Retained {
                topic: self.topics.policy_part(i),
                payload: table,
                report: false,
                json: false,
            });
        }
    }

    /// Queues session messages, then buffered batches until [`INFLIGHT_WINDOW`] are
    /// unacknowledged; stops at a full request queue (the next event continues).
    fn send(&mut self) {
        if !self.connected || self.resyncing {
            return;
        }
        while let Some(message) = self.outbox.front() {
            let content_type = message.json.then_some(JSON);
            match self.client.try_publish(
                &message.topic,
                true,
                message.payload.clone(),
                content_type,
            ) {
                Ok(()) => {
                    if let Some(message) = self.outbox.pop_front() {
                        self.expected.push_back(Sent::Retained(message));
                    }
                }
                Err(RequestError::Full) | Err(RequestError::Offline) => return,
            }
        }
        let mut next = Vec::new();
        {
            let buffer = lock(&self.buffer);
            let mut index = 0;
            while self.in_flight.len() + next.len() < INFLIGHT_WINDOW {
                let Some(batch) = buffer.get(index) else {
                    break;
                };
                index += 1;
                if !self.in_flight.contains_key(&batch.key) {
                    next.push((batch.key, batch.payload.clone()));
                }
            }
        }
        for (key, payload) in next {
            match self
                .client
                .try_publish(&self.topics.events, false, payload, None)
            {
                Ok(()) => {
                    self.expected.push_back(Sent::Batch(key));
                    self.in_flight.insert(key, Instant::now());
                }
                Err(_) => break, // request queue full: continue after the next event
            }
        }
    }
}

/// Polls the connection and forwards what it yields; after a failure it waits
/// ([`Backoff`]: exponential, 250 ms to 30 s, with jitter) before the next poll
/// reconnects. The backoff starts over after a connection that lasted (so a broker
/// that keeps closing right after the CONNACK is retried ever more slowly), unless the
/// broker was refusing our publishes (`penalty`). Ends when the receiver is gone or
/// `stop` is set.
async fn drive_event_loop(
    mut connection: Connection,
    events: tokio::sync::mpsc::Sender<Result<Event, Failure>>,
    stop: Arc<AtomicBool>,
    penalty: Arc<AtomicBool>,
) {
    let mut backoff = Backoff::new();
    while !stop.load(Ordering::Relaxed) {
        let result = connection.poll().await;
        let failed = result.is_err();
        if let Err(failure) = &result
            && failure.after_stable_connection()
            && !penalty.load(Ordering::Relaxed)
        {
            backoff.reset();
        }
        if events.send(result).await.is_err() {
            return;
        }
        if failed {
            let deadline = tokio::time::Instant::now() + backoff.next_delay();
            while tokio::time::Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until(
                    deadline.min(tokio::time::Instant::now() + Duration::from_millis(100)),
                )
                .await;
            }
        }
    }
}
