#!/usr/bin/env python3
"""A real SMTP server for pgrollout's email tests, built on aiosmtpd (Debian
package python3-aiosmtpd, installed by deploy/install-prerequisites.sh).

It speaks STARTTLS (required before AUTH and MAIL) or implicit TLS with the
certificate it is given, checks an AUTH LOGIN/PLAIN password when one is
given, and prints one line per event on stdout, which the test waits on:

    READY <port>
    MESSAGE {"from": ..., "to": ..., "subject": ..., "body": ..., ...}
    REFUSED <reply>            (when started with --reply)
"""
import argparse
import email
import email.policy
import json
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, reply):
        self.reply = reply

    async def handle_DATA(self, server, session, envelope):
        if self.reply:
            print("REFUSED " + self.reply, flush=True)
            return self.reply
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": str(message["From"]),
            "to": str(message["To"]),
            "subject": str(message["Subject"]),
            "message_id": str(message["Message-ID"]),
            "content_type": message.get_content_type(),
            "body": body.get_content() if body is not None else "",
            "login": session.auth_data if session.authenticated else None,
            # STARTTLS sets session.ssl; implicit TLS wraps the transport.
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
        }
        print("MESSAGE " + json.dumps(record), flush=True)
        return "250 2.0.0 OK"


def authenticator_for(login, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == login
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, auth_data=login if ok else None, handled=False)

    return authenticate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--implicit-tls", action="store_true")
    parser.add_argument("--login")
    parser.add_argument("--password-file")
    parser.add_argument("--reply", help="answer DATA with this instead of accepting")
    args = parser.parse_args()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    parameters = {}
    if args.login:
        with open(args.password_file) as f:
            password = f.read().strip()
        parameters.update(
            authenticator=authenticator_for(args.login, password),
            auth_required=True,
        )
    if args.implicit_tls:
        parameters.update(ssl_context=context)
    else:
        parameters.update(tls_context=context, require_starttls=True)
    controller = Controller(
        Handler(args.reply),
        hostname="127.0.0.1",
        port=args.port,
        server_hostname="localhost",
        **parameters,
    )
    controller.start()
    print(f"READY {args.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
