package io.likes.peer;

/**
 * A record's value as read by {@link WireDeserializer}: a valid event, or the
 * reason it is poison (never an exception: a poison record is skipped and
 * counted, never a crash).
 */
record Decoded(LikeEvent event, String poison) {

    /** One like or unlike, validated as likes_domain validates it. */
    record LikeEvent(String eventId, long userId, int itemType, long itemId, boolean like, long timestampMs) {
        /** The item as the projector names it: {@code item_type:item_id}. */
        String item() {
            return itemType + ":" + itemId;
        }
    }

    static Decoded of(LikeEvent event) {
        return new Decoded(event, null);
    }

    static Decoded poison(String reason) {
        return new Decoded(null, reason);
    }

    boolean isPoison() {
        return event == null;
    }
}
