// Command tinyproc is the static test program the containerd runtime tests
// run in containers: it prints its RLIMIT_NOFILE and args, optionally writes
// a file, sleeps, and exits with a given code. SIGTERM makes it exit 0 unless
// -ignore-term is set.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	sleep := flag.Duration("sleep", 0, "how long to run before exiting")
	code := flag.Int("exit", 0, "exit code")
	ignoreTerm := flag.Bool("ignore-term", false, "ignore SIGTERM")
	touch := flag.String("touch", "", "write this file before sleeping")
	flag.Parse()

	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		fmt.Println("getrlimit:", err)
	}
	fmt.Printf("nofile soft=%d hard=%d\n", rl.Cur, rl.Max)
	fmt.Printf("args=%q\n", os.Args)
	fmt.Printf("env TINY=%s\n", os.Getenv("TINY"))

	if *touch != "" {
		if err := os.WriteFile(*touch, []byte("hello\n"), 0o644); err != nil {
			fmt.Println("touch:", err)
			os.Exit(2)
		}
	}

	sigs := make(chan os.Signal, 1)
	if *ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sigs, syscall.SIGTERM)
	}
	fmt.Println("ready")
	select {
	case <-sigs:
		fmt.Println("got SIGTERM")
		os.Exit(0)
	case <-time.After(*sleep):
	}
	os.Exit(*code)
}
