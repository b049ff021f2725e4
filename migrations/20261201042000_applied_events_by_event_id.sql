-- applied_events' key leads with the event id. Every event the projector
-- applies inserts one row here, and with the item first those inserts landed
-- on random leaf pages of the key's index, so their cost grew with the table
-- (the drain at three table sizes, bench/src/scenarios/drain_sizes.rs). Event
-- ids the API generates are UUIDv7, ordered by time, so with the id first the
-- inserts go to the right edge of the index, whatever its size; ids clients
-- bring cost what they did before. Lookups give all three columns, so either
-- order serves them, and ON CONFLICT (item_id, item_type, event_id) infers this
-- key as it did the old one. The table holds only the dedup horizon's events,
-- so rebuilding its key here is short.
ALTER TABLE applied_events
    DROP CONSTRAINT applied_events_pkey,
    ADD PRIMARY KEY (event_id, item_id, item_type);
