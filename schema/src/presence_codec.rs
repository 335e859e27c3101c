//! Cap'n Proto mapping of the presence frames in [`crate::presence`].

use capnp::struct_list;

use crate::codec::{list_len, read_text, read_texts, write_texts};
use crate::generated::frames_capnp as wire;
use crate::presence::{
    Heartbeat, PresenceEntry, PresenceSettings, PresenceState, PresenceSubscribe, PresenceUpdate,
    Typing,
};

pub(crate) fn write_state(state: PresenceState) -> wire::PresenceState {
    match state {
        PresenceState::Offline => wire::PresenceState::Offline,
        PresenceState::Away => wire::PresenceState::Away,
        PresenceState::Online => wire::PresenceState::Online,
    }
}

pub(crate) fn read_state(state: wire::PresenceState) -> PresenceState {
    match state {
        wire::PresenceState::Offline => PresenceState::Offline,
        wire::PresenceState::Away => PresenceState::Away,
        wire::PresenceState::Online => PresenceState::Online,
    }
}

pub(crate) fn write_heartbeat(mut out: wire::heartbeat::Builder<'_>, heartbeat: &Heartbeat) {
    out.set_state(write_state(heartbeat.state));
}

pub(crate) fn read_heartbeat(heartbeat: wire::heartbeat::Reader<'_>) -> capnp::Result<Heartbeat> {
    Ok(Heartbeat {
        state: read_state(heartbeat.get_state()?),
    })
}

pub(crate) fn write_subscribe(
    mut out: wire::presence_subscribe::Builder<'_>,
    request: &PresenceSubscribe,
) {
    out.set_request_id(request.request_id);
    write_texts(
        out.reborrow().init_users(list_len(request.users.len())),
        &request.users,
    );
    let conversations = &request.open_conversations;
    let mut list = out.init_open_conversations(list_len(conversations.len()));
    for (index, conversation_id) in conversations.iter().enumerate() {
        list.set(list_len(index), *conversation_id);
    }
}

pub(crate) fn read_subscribe(
    request: wire::presence_subscribe::Reader<'_>,
) -> capnp::Result<PresenceSubscribe> {
    Ok(PresenceSubscribe {
        request_id: request.get_request_id(),
        users: read_texts(request.get_users())?,
        open_conversations: request.get_open_conversations()?.iter().collect(),
    })
}

pub(crate) fn write_update(mut out: wire::presence_update::Builder<'_>, update: &PresenceUpdate) {
    out.set_request_id(update.request_id);
    out.set_snapshot(update.snapshot);
    let list = out.init_entries(list_len(update.entries.len()));
    write_entries(list, &update.entries);
}

pub(crate) fn read_update(
    update: wire::presence_update::Reader<'_>,
) -> capnp::Result<PresenceUpdate> {
    Ok(PresenceUpdate {
        request_id: update.get_request_id(),
        snapshot: update.get_snapshot(),
        entries: read_entries(update.get_entries()?)?,
    })
}

/// Writes entries into a list that has room for exactly `entries.len()`.
pub(crate) fn write_entries(
    mut list: struct_list::Builder<'_, wire::presence_entry::Owned>,
    entries: &[PresenceEntry],
) {
    for (index, entry) in entries.iter().enumerate() {
        let mut item = list.reborrow().get(list_len(index));
        item.set_user(&entry.user);
        item.set_state(write_state(entry.state));
        item.set_last_seen_ms(entry.last_seen_ms);
    }
}

pub(crate) fn read_entries(
    list: struct_list::Reader<'_, wire::presence_entry::Owned>,
) -> capnp::Result<Vec<PresenceEntry>> {
    let mut entries = Vec::with_capacity(list.len() as usize);
    for entry in list {
        entries.push(PresenceEntry {
            user: read_text(entry.get_user())?,
            state: read_state(entry.get_state()?),
            last_seen_ms: entry.get_last_seen_ms(),
        });
    }
    Ok(entries)
}

pub(crate) fn write_typing(mut out: wire::typing::Builder<'_>, typing: &Typing) {
    out.set_conversation_id(typing.conversation_id);
    out.set_user(&typing.user);
    out.set_active(typing.active);
}

pub(crate) fn read_typing(typing: wire::typing::Reader<'_>) -> capnp::Result<Typing> {
    Ok(Typing {
        conversation_id: typing.get_conversation_id(),
        user: read_text(typing.get_user())?,
        active: typing.get_active(),
    })
}

pub(crate) fn write_settings(
    mut out: wire::presence_settings::Builder<'_>,
    settings: &PresenceSettings,
) {
    out.set_request_id(settings.request_id);
    out.set_hide_last_seen(settings.hide_last_seen);
}

pub(crate) fn read_settings(settings: wire::presence_settings::Reader<'_>) -> PresenceSettings {
    PresenceSettings {
        request_id: settings.get_request_id(),
        hide_last_seen: settings.get_hide_last_seen(),
    }
}
