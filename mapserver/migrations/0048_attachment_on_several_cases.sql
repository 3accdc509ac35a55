-- One uploaded file on several cases. A photo that covers two duplicate complaints, or a
-- bureau's photo of work that settled two cases, is the same upload (the same person, the
-- same cleaned bytes: migration 0012 keeps one row per uploader and hash) named by a signed
-- step of each case. Migration 0012 linked an upload once at most (the link's primary key was
-- the attachment alone), so the second case's step was refused with 409 and a handheld's
-- queued step failed for good, though the signer could show the file on either case.
--
-- Now an upload is linked once per history entry: each link names its case and step, the
-- bytes stay where they are, stored once. What held before still holds: only the uploader
-- links an upload (mapserver/cases/attachments.py), links are append-only, a linked upload
-- can never be deleted (the link's foreign key), and an upload counts as waiting unattached
-- (the daily bound, the owner's purge) until its first link.

ALTER TABLE case_attachment_link DROP CONSTRAINT case_attachment_link_pkey;
ALTER TABLE case_attachment_link ADD PRIMARY KEY (attachment_id, event_id);
