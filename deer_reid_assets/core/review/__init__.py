"""The review app's logic, without a web framework: the queue's order, the actions a person takes
(each one transaction that writes a correction), undo, the labelled pairs corrections become, the
dashboard's figures and the app's safety rules."""
