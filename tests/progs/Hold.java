// A JVM that prints "READY <pid> <max heap bytes>" and sleeps: the agent reads its -Xmx (tests/kube/test_agent_real.py).
public class Hold {
    public static void main(String[] args) throws Exception {
        System.out.println("READY " + ProcessHandle.current().pid() + " " + Runtime.getRuntime().maxMemory());
        System.out.flush();
        Thread.sleep(Long.MAX_VALUE);
    }
}
