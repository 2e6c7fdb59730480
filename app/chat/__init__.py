"""The Chat tab: the compare and its generation service (`tab`), blind votes (`blind_panel`) and prompt suites
(`suites_panel`)."""
