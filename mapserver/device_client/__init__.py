"""The reference device client: what an inspector's handheld app does, as a small program
(`citygrid device …`). Reports, photos and check results wait in an on-disk SQLite queue
and are sent in order over a link that may drop at any moment; nothing is lost or doubled.

Pure parts (backoff, plan) do no I/O; the queue, the link and Pillow are the edges."""
