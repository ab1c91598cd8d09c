-- Store-and-forward to a central PostgreSQL ([central] url). The trigger notes every telemetry
-- row actually inserted (a duplicate ignored by ON CONFLICT fires nothing) in forward_queue,
-- in insertion order (seq), while forward_state.enabled is 1; the store sets enabled from the
-- configuration at every start and empties the queue when forwarding is off. The forwarder
-- replays the queue oldest first and deletes what the central database acknowledged, in the
-- same transaction that advances the persisted high-water marks: hwm (last telemetry seq) and
-- commands_hwm (last commands.id). dropped counts queue entries given up because the backlog
-- passed central.max_backlog (oldest first) or because local retention removed the row first.
CREATE TABLE forward_queue (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    time      INTEGER NOT NULL
);

CREATE TABLE forward_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    enabled      INTEGER NOT NULL DEFAULT 0 CHECK (enabled IN (0, 1)),
    hwm          INTEGER NOT NULL DEFAULT 0,
    commands_hwm INTEGER NOT NULL DEFAULT 0,
    dropped      INTEGER NOT NULL DEFAULT 0
);
INSERT INTO forward_state (id) VALUES (1);

CREATE TRIGGER forward_enqueue AFTER INSERT ON battery_status
WHEN (SELECT enabled FROM forward_state WHERE id = 1) = 1
BEGIN
    INSERT INTO forward_queue (device_id, time) VALUES (NEW.device_id, NEW.time);
END;
