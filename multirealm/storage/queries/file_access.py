"""
File access: what a file's first message says about it, and who may fetch
a file sent to a group (its members when it was sent, kept in
C{file_readers}).  The rule itself is L{multirealm.core.policy.fetchable}.
"""

from multirealm import errors
from multirealm.core.policy import FileEntry
from multirealm.model import FileRef


def snapshot_group_readers(db, file_id, group):
    """The members local group C{group} has now may fetch C{file_id}."""
    db.execute(
        "INSERT INTO file_readers (file_id, reader)"
        " SELECT ?, member FROM members WHERE group_name = ? ON CONFLICT DO NOTHING",
        (file_id, group),
    )


def snapshot_remote_group_readers(db, realm, file_id, group, sent):
    """
    The users of this realm in group C{group} of another realm (as its
    home announced them) who were members when the file was C{sent} (its
    message's timestamp) may fetch C{file_id}, stored here: the group's
    history reaches a realm after its first member was added, and that
    member was not one when these files were sent.
    """
    db.execute(
        "INSERT INTO file_readers (file_id, reader)"
        " SELECT ?, member || '@' || ? FROM remote_members"
        " WHERE group_key = ? AND (since IS NULL OR since <= ?) ON CONFLICT DO NOTHING",
        (file_id, realm, str(group).lower(), sent),
    )


def file_entry(db, file_id, reader):
    """The L{FileEntry} of C{file_id} for C{reader} (an address); L{errors.NoSuchFile}."""
    row = db.execute(
        "SELECT kind, sender, recipient, file_name, file_id, file_size FROM messages"
        " WHERE file_id = ? ORDER BY seq LIMIT 1",
        (file_id,),
    ).fetchone()
    if row is None:
        raise errors.NoSuchFile(f"no file {file_id!r}")
    kind, sender, recipient, name, stored_id, size = row
    listed = db.execute(
        "SELECT 1 FROM file_readers WHERE file_id = ? AND reader = ?", (stored_id, str(reader))
    ).fetchone() is not None
    return FileEntry(FileRef(name, stored_id, size), kind, sender, recipient, listed)


def file_ids(db):
    """Every file id that a message carries."""
    return {row[0] for row in db.execute("SELECT file_id FROM messages WHERE file_id IS NOT NULL")}
