// The sandbox ("pause") process of the local node's pods, built by dev/images.py.
module penguinmails.io/dev/pause

go 1.22
