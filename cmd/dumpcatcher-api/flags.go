package main

import "flag"

// goFlagSet is a fresh standard flag set for the zap options (not the
// global flag.CommandLine).
func goFlagSet() *flag.FlagSet { return flag.NewFlagSet("zap", flag.ContinueOnError) }
