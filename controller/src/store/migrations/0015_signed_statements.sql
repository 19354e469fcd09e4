-- Issue 19: the operators' signed statements for a parked deploy request,
-- kept verbatim (the bytes signed, the signature, the signer's certificate)
-- and forwarded to the agent with the job. The controller cannot make them;
-- it only keeps them in the order they arrived. (IF NOT EXISTS: the history
-- index's upgrade test replays every migration after 0011 on a store it
-- downgraded, as 0012 does.)
CREATE TABLE IF NOT EXISTS signed_statements (
    request_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    statement   BLOB NOT NULL,
    signature   BLOB NOT NULL,
    certificate BLOB NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (request_id, seq)
);
