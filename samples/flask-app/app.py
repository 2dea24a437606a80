"""A plain Flask app. racetrackd serves it at /pub/job/flask-app/<version>/api/v1/..."""

import os

from flask import Flask, jsonify, redirect, request, url_for

app = Flask(__name__)


@app.get("/")
def index() -> str:
    # Relative links keep working under whatever path the gateway serves the app at.
    return (f"<h1>{os.environ.get('APP_GREETING', 'Hello')}</h1>"
            '<p><a href="add?a=40&amp;b=2">40 + 2</a></p>')


@app.route("/add", methods=["GET", "POST"])
def add() -> object:
    numbers = request.get_json(silent=True) or request.args
    try:
        return jsonify(sum=float(numbers["a"]) + float(numbers["b"]))
    except (KeyError, ValueError) as exc:
        return jsonify(error=f"give two numbers a and b ({exc})"), 400


@app.get("/plus")
def plus() -> object:
    """An old name of /add: a redirect, which the gateway rewrites under the job's path."""
    return redirect(url_for("add", **request.args))
